"""Shared by the speed benchmarks: train several models in alternating blocks of steps,
so that machine noise hits all of them alike, and report median steps/second."""

from __future__ import annotations

import statistics
import time

import torch


def block(loss_fn, opt, data: torch.Tensor, n: int, batch: int) -> float:
    """n training steps on random batches of `data`; returns steps/second."""
    t0 = time.perf_counter()
    for _ in range(n):
        x = data[torch.randint(0, data.shape[0], (batch,))]
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return n / (time.perf_counter() - t0)


def alternate(runs: dict, data: torch.Tensor, blocks: int, steps: int, batch: int, warmup: int = 30) -> dict:
    """runs: name -> (loss_fn, optimizer). Returns name -> list of steps/s, one per block."""
    for loss_fn, opt in runs.values():
        block(loss_fn, opt, data, warmup, batch)
    speeds: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for b in range(blocks):
        for k in (names if b % 2 == 0 else names[::-1]):
            speeds[k].append(block(*runs[k], data, steps, batch))
    return speeds


TORCH_PIN = "torch==2.13.0"  # the CPU build (a looser pin pulls a multi-GB CUDA one)


def peer_python(venv, module: str, pin: str, explicit: str | None = None) -> str:
    """A Python that imports `module` (a peer library that pins its own dependencies):
    the one given, else the virtual environment `venv`, made and filled on first use --
    the CPU build of torch first, then the peer with torch pinned again, since a
    dependency would otherwise upgrade it."""
    import subprocess
    import sys
    from pathlib import Path

    if explicit:
        return explicit
    py = Path(venv) / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", f"import {module}"], capture_output=True).returncode == 0:
        return str(py)
    print(f"installing {pin} into {venv} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [TORCH_PIN], check=True)
    subprocess.run(pip + [pin, TORCH_PIN], check=True)
    return str(py)


def peer(name: str):
    """A benchmark-only peer library (zuko, ...), or None after saying how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        print(f"{name} is not installed: pip install {name} (or pip install -e .[bench])")
        return None


def median(v: list[float]) -> float:
    return statistics.median(v)
