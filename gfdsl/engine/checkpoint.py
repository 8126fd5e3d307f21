"""Checkpoints: one safetensors file (never pickle) with parameters, optimizer state and
RNG states, the spec's hash and the step in its metadata; written atomically and
fsynced, so a kill at any moment leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from gfdsl.errors import GfdslError, diag

CKPT = "checkpoint.safetensors"


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _params_and_buffers(model) -> dict[str, torch.Tensor]:
    """Named parameters (shared nets once, under their first name) and persistent buffers."""
    out = dict(model.named_parameters())
    persistent = set(model.state_dict())
    for n, b in model.named_buffers():
        if n in persistent:
            out[n] = b
    return out


def save_checkpoint(out: Path, model, opt, step: int, shash: str, rng: dict[str, torch.Tensor],
                    extra: dict | None = None) -> None:
    """One safetensors file with model, optimizer and RNG states, written atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{n}": t.detach().contiguous() for n, t in _params_and_buffers(model).items()}
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous()
    for k, v in rng.items():
        tensors[f"rng.{k}"] = v.contiguous()
    tensors = {k: v.cpu() for k, v in tensors.items()}
    meta = {"format": "gfdsl-checkpoint-1", "spec_hash": shash, "step": str(step),
            "param_groups": json.dumps(sd["param_groups"]), **(extra or {})}
    tmp = out / f".{CKPT}.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)
    with open(tmp, "rb") as f:  # on disk before the rename makes it the checkpoint
        os.fsync(f.fileno())
    os.replace(tmp, out / CKPT)


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
