"""Checkpoints: one safetensors file (never pickle) with parameters, optimizer state and
RNG states, the spec's hash, the step and a SHA-256 of the tensor bytes in its metadata;
written atomically and fsynced, so a kill at any moment leaves either the previous
checkpoint or the new one. The checkpoint it replaces is kept as checkpoint.prev.safetensors:
a checkpoint damaged on disk (the digest no longer matches) is an error naming the file,
and `--resume` falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from gfdsl.errors import GfdslError, diag

CKPT = "checkpoint.safetensors"
PREV = "checkpoint.prev.safetensors"
BEST = "best.safetensors"  # the weights at the lowest validation NLL (a run with `val`)


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _params_and_buffers(model) -> dict[str, torch.Tensor]:
    """Named parameters (shared nets once, under their first name) and persistent buffers."""
    out = dict(model.named_parameters())
    persistent = set(model.state_dict())
    for n, b in model.named_buffers():
        if n in persistent:
            out[n] = b
    return out


def save_checkpoint(out: Path, model, opt, step: int, shash: str, rng: dict[str, torch.Tensor],
                    extra: dict | None = None, more: dict[str, torch.Tensor] | None = None) -> None:
    """One safetensors file with model, optimizer and RNG states (and `more` tensors:
    the EMA's averages), written atomically."""
    tensors = {f"model.{n}": t.detach().contiguous() for n, t in _params_and_buffers(model).items()}
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous()
    for k, v in rng.items():
        tensors[f"rng.{k}"] = v.contiguous()
    for k, v in (more or {}).items():
        tensors[k] = v.detach().contiguous()
    meta = {"param_groups": json.dumps(sd["param_groups"]), **(extra or {})}
    _write(out, CKPT, tensors, step, shash, meta, keep=PREV)


def save_weights(out: Path, model, step: int, shash: str, extra: dict | None = None) -> None:
    """best.safetensors: the model's tensors alone (no optimizer or RNG), as a run with a
    validation split keeps them at its lowest validation NLL; read back by restore_model."""
    tensors = {f"model.{n}": t.detach().contiguous() for n, t in _params_and_buffers(model).items()}
    _write(out, BEST, tensors, step, shash, dict(extra or {}))


def _write(out: Path, name: str, tensors: dict, step: int, shash: str, meta: dict, keep: str | None = None) -> None:
    """Write tensors and metadata to out/name atomically (fsynced, then renamed); `keep`:
    first move the file it replaces there."""
    from safetensors.torch import save_file

    tensors = {k: v.cpu() for k, v in tensors.items()}
    meta = {"format": "gfdsl-checkpoint-1", "spec_hash": shash, "step": str(step), **meta,
            "sha256": tensor_digest(tensors)}
    tmp = out / f".{name}.tmp"
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as f:  # on disk before the rename makes it the checkpoint
            os.fsync(f.fileno())
    except OSError as e:  # a full disk, a folder gone read-only: the last good checkpoint stays
        tmp.unlink(missing_ok=True)
        raise GfdslError([diag("E704", None, None, path=str(out / name), why=e.strerror or str(e))]) from None
    if keep and (out / name).is_file():
        os.replace(out / name, out / keep)  # a kill between the renames leaves `keep`, which resume reads
    os.replace(tmp, out / name)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # truncated or foreign file: say which and why
        raise GfdslError([diag("E803", None, None, path=str(path), why=f"the checkpoint cannot be read ({e})",
                               hint="the file is damaged; start a new run")]) from None
    if meta.get("format") != "gfdsl-checkpoint-1":
        raise GfdslError([diag("E803", None, None, path=str(path), why="it is not a gfdsl checkpoint",
                               hint="pass a folder written by `gfdsl run`")])
    if "sha256" in meta and tensor_digest(tensors) != meta["sha256"]:
        raise GfdslError([diag("E803", None, None, path=str(path),
                               why="the checkpoint is damaged: its tensors' SHA-256 differs from the one it was "
                                   "written with", hint="resume the run (it falls back to checkpoint.prev.safetensors "
                                                        "where one is kept), or start a new run")])
    return tensors, meta


def read_latest(run: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The newest good checkpoint of a run folder for --resume: checkpoint.safetensors, or
    where it is damaged or missing, checkpoint.prev.safetensors (saying so on stderr);
    None when the run has written neither."""
    import sys

    if not (run / CKPT).is_file() and not (run / PREV).is_file():
        return None
    try:
        if not (run / CKPT).is_file():
            raise FileNotFoundError
        return read_checkpoint(run / CKPT)
    except (GfdslError, FileNotFoundError) as e:
        if not (run / PREV).is_file():
            raise e if isinstance(e, GfdslError) else GfdslError([diag(
                "E803", None, None, path=str(run), why=f"it holds no {CKPT}", hint="start a new run")]) from None
        tensors, meta = read_checkpoint(run / PREV)
        print(f"gfdsl: {run / CKPT} is {'damaged' if isinstance(e, GfdslError) else 'missing'}; resuming from "
              f"{PREV} (step {meta.get('step')})", file=sys.stderr)
        return tensors, meta


def restore_model(model, tensors: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Copy a checkpoint's tensors into the model (every one, or those under `prefix`:
    `nets.` loads a run's nets into a posterior's prior)."""
    own = {n: t for n, t in _params_and_buffers(model).items() if n.startswith(prefix)}
    saved = {k[6:]: v for k, v in tensors.items() if k.startswith("model." + prefix)}
    if set(own) != set(saved):
        missing = sorted(set(own) - set(saved))[:3]
        raise GfdslError([diag("E803", None, None, path="checkpoint", why="its tensors do not match the model"
                               + (f" (it lacks {', '.join(missing)})" if missing else ""),
                               hint="the spec changed since the checkpoint was written")])
    with torch.no_grad():
        for n, t in own.items():
            if t.shape != saved[n].shape:
                raise GfdslError([diag("E803", None, None, path="checkpoint",
                                       why=f"{n} has shape {tuple(saved[n].shape)}, the model needs {tuple(t.shape)}",
                                       hint="the spec changed since the checkpoint was written")])
            t.copy_(saved[n])


def restore_optimizer(opt, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
