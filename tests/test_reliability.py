"""Faults lose nothing: a run killed with SIGKILL resumes to bit-identical parameters,
optimizer and RNG states; a non-finite loss stops the run naming the step, the term and
the kernel, keeping the last good checkpoint; the same seed gives the same loss curve;
checkpoints are safetensors and never pickle."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gfdsl.errors import GfdslError
from gfdsl.engine.loop import train  # noqa: F401
from gfdsl.engine.checkpoint import CKPT, read_checkpoint  # noqa: F401
from gfdsl.engine.rundir import RunOptions  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def small_spec(tmp_path: Path, steps: int, every: int) -> Path:
    text = (ROOT / "specs" / "ddpm.gfn").read_text()
    text = text.replace("T = 100", "T = 5").replace("H = 256", "H = 32")
    text = text.replace("steps  = 20000", f"steps  = {steps}").replace("batch  = 512", "batch  = 32")
    text = text.replace("seed   = 0", f"seed   = 3\n    checkpoint_every = {every}")
    p = tmp_path / "small.gfn"
    p.write_text(text)
    return p


def gfdsl(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gfdsl", *args], capture_output=True, text=True, **kw)


def ckpt_step(path: Path) -> int:
    try:
        return int(read_checkpoint(path)[1]["step"])
    except (GfdslError, OSError):
        return -1


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    spec = small_spec(tmp_path, steps=3000, every=25)
    common = ["--no-progress", "--eval-k", "1", "--eval-n", "10"]
    r = gfdsl("run", str(spec), "--out", str(tmp_path / "full"), *common)
    assert r.returncode == 0, r.stderr
    target = random.Random().randint(100, 2000)
    run = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "gfdsl", "run", str(spec), "--out", str(run), *common],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and ckpt_step(run / CKPT) < target:
        time.sleep(0.01)
    assert p.poll() is None, "the run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = ckpt_step(run / CKPT)
    assert 0 < killed_at < 3000
    assert not (run / "summary.json").exists()
    r = gfdsl("run", "--resume", str(run), *common)
    assert r.returncode == 0, r.stderr
    a, ma = read_checkpoint(tmp_path / "full" / CKPT)
    b, mb = read_checkpoint(run / CKPT)
    assert ma["step"] == mb["step"] == "3000"
    assert set(a) == set(b)
    for k in a:  # parameters, Adam moments and step counts, RNG states
        assert torch.equal(a[k], b[k]), k
    s = json.loads((run / "summary.json").read_text())
    assert s["resumed_from_step"] == killed_at
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "metrics after the checkpoint must not be duplicated"


def test_resume_refuses_a_changed_spec(tmp_path):
    spec = small_spec(tmp_path, steps=40, every=20)
    out = tmp_path / "r"
    assert gfdsl("run", str(spec), "--out", str(out), "--no-progress", "--eval-n", "5", "--eval-k", "1").returncode == 0
    (out / "spec.gfn").write_text((out / "spec.gfn").read_text().replace("H = 32", "H = 33"))
    r = gfdsl("run", "--resume", str(out))
    assert r.returncode == 1 and "hash mismatch" in r.stderr and "Traceback" not in r.stderr


def test_non_finite_loss_names_step_term_and_kernel(tmp_path, monkeypatch):
    from gfdsl.runtime import kernels

    spec = small_spec(tmp_path, steps=200, every=20)
    calls = {"n": 0}
    real = kernels.DDPMDenoiser.outputs  # the one place the denoiser's net is read

    def faulty(self, x, i, ctx=None):
        calls["n"] += 1
        out, u = real(self, x, i, ctx)
        return (out * float("nan") if calls["n"] > 57 else out), u  # step 58 goes bad

    monkeypatch.setattr(kernels.DDPMDenoiser, "outputs", faulty)
    out = tmp_path / "nan"
    with pytest.raises(GfdslError) as e:
        train(str(spec), RunOptions(out=str(out), progress=False, log_every=10))
    msg = e.value.render()
    assert "the run stopped at step 58" in msg
    assert "objective term elbo" in msg
    assert f"ddpm_denoiser() at {spec}:28:16" in msg
    assert "last good checkpoint (step 40)" in msg
    t, meta = read_checkpoint(out / CKPT)
    assert meta["step"] == "40"
    assert all(torch.isfinite(v).all() for k, v in t.items() if k.startswith("model."))


def test_same_seed_same_loss_curve(tmp_path):
    spec = small_spec(tmp_path, steps=60, every=1000)
    curves = []
    for name in ("a", "b"):
        train(str(spec), RunOptions(out=str(tmp_path / name), progress=False, log_every=5, eval_n=5, eval_k=1))
        curves.append([json.loads(x)["loss"] for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    assert curves[0] == curves[1] and len(curves[0]) == 12


def test_no_pickle_anywhere():
    """torch.load only with weights_only=True; no pickle or eval in the package."""
    for path in (ROOT / "gfdsl").rglob("*.py"):
        text = path.read_text()
        assert "weights_only=False" not in text, path
        assert "import pickle" not in text and not re.search(r"(?<![\w.])(eval|exec)\(", text), path
        if "torch.load(" in text:
            assert "weights_only=True" in text, path


def test_data_file_must_stay_inside_the_spec_folder(tmp_path, capsys):
    from gfdsl.cli.app import main

    inner = tmp_path / "proj"
    inner.mkdir()
    secret = tmp_path / "secret.npy"
    import numpy as np

    np.save(secret, np.zeros((10, 2), dtype=np.float32))
    os.symlink(secret, inner / "data.npy")
    spec = inner / "s.gfn"
    spec.write_text((ROOT / "specs" / "realnvp.gfn").read_text()
                    .replace('toy2d(name = "8gaussians")', 'file(path = "data.npy")'))
    assert main(["run", str(spec), "--steps", "1", "--out", str(tmp_path / "r")]) == 1
    assert "outside the spec's folder" in capsys.readouterr().err
