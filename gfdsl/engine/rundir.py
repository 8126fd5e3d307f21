"""Run directories and what a run reads: options, devices, data, a trained model back.

A run directory holds:
  spec.gfn            the spec exactly as it ran
  run.json            settings, overrides, device, spec hash
  metrics.jsonl       one JSON line per log interval (step, loss, terms, speed), and per
                      evaluation or IPF round
  checkpoint.safetensors  the latest good checkpoint (gfdsl.engine.checkpoint)
  samples.npy         samples from P_F, shaped like the terminal state
  samples.png         a plot of them (gfdsl.engine.plots)
  summary.json        spec, model, steps, seed, timing, and the evaluation's figures
Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gfdsl.driver import Compiled, check_file
from gfdsl.engine.checkpoint import CKPT, read_checkpoint, restore_model, spec_hash
from gfdsl.errors import GfdslError, diag
from gfdsl.files import atomic_write


@dataclass
class RunOptions:
    steps: int | None = None  # a posterior: of its rtb stage
    batch: int | None = None
    lr: float | None = None
    seed: int | None = None
    device: str = "auto"
    threads: int = 1
    compile: bool = False
    amp: bool = False  # bf16 autocast of the nets (log-probabilities stay float32)
    out: str | None = None
    eval_k: int | None = None
    eval_n: int | None = 2000  # test points used for test_nll_nats (None: all)
    samples: int | None = None
    progress: bool = True
    log_every: int | None = None
    prior: str | None = None  # a posterior: the run directory its frozen prior is loaded from
    prior_steps: int | None = None  # a posterior: steps of its prior stage
    on_checkpoint: object = None  # Python API: called as f(step, model) after each checkpoint


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GfdslError([diag("E805", None, None, path="--device", device=name, why="no CUDA device is visible")])
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise GfdslError([diag("E805", None, None, path="--device", device=name, why="expected auto, cpu or cuda")])
    return torch.device(name)


def write_json(path: Path, obj) -> None:
    atomic_write(str(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def npy_bytes(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, a, allow_pickle=False)
    return f.getvalue()


def prepare_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise GfdslError([diag("E803", None, None, path=str(out), why="it already holds files",
                               hint="choose another --out, or remove the folder")])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GfdslError([diag("E803", None, None, path=str(out), why=e.strerror or str(e),
                               hint="check that the parent folder is writable")]) from None


def read_run(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GfdslError([diag("E803", None, None, path=str(out), why=f"its run.json cannot be read ({e})",
                               hint="pass a folder written by `gfdsl run`")]) from None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the kill
    atomic_write(str(path), ("\n".join(keep) + ("\n" if keep else "")).encode("utf-8"))


# -- data ----------------------------------------------------------------------------------------


def load_data(c: Compiled):
    """(train, test) of the data target; (B empty rows' template, None) without one: a
    model trained from a reward alone reads no data, so its batch only carries a size."""
    from gfdsl.runtime.data import load

    g = c.graph
    if g.graph["dataset"] is None:
        return torch.zeros(1, 0), None
    train, test = load(g.graph["dataset"], g.nodes[g.graph["data"]], Path(c.source.path).resolve().parent)
    _on_decoder_grid(c, train, test)
    return train, test


def _on_decoder_grid(c: Compiled, *sets: torch.Tensor) -> None:
    """A discretised decoder (ddpm_denoiser(levels = L)) scores data on L values in
    [-1, 1]; data off that grid would be scored as its nearest value, silently wrong."""
    from gfdsl.lang.source import Span

    for k in c.graph.graph["kernels"].values():
        L = k["args"].get("levels", 0) if k["entry"] == "ddpm_denoiser" else 0
        for x in (x for x in sets if L and x is not None):
            v = (x.double() + 1) * (L - 1) / 2  # grid values map to the integers 0..L-1
            bad = ((v - v.round()).abs() > 1e-4) | (v < -1e-4) | (v > L - 1 + 1e-4)
            if bool(bad.any()):
                raise GfdslError([diag("E802", c.source, Span(*k["span"]),
                                       message=f"ddpm_denoiser(levels = {L}) needs data on {L} evenly spaced values "
                                               f"in [-1, 1], but the data holds {float(x.flatten()[bad.flatten()][0]):g}",
                                       hint="drop `levels` for continuous data, or match it to the data's levels "
                                            "(digits(binarize = false) has 17)")])


# -- trained models -------------------------------------------------------------------------------


def load_model(run: Path, device: str = "cpu"):
    """Rebuild a run's model from its spec.gfn and checkpoint (refusing a changed spec)."""
    from gfdsl.compile.lower import lower

    spec = run / "spec.gfn"
    ckpt = run / CKPT
    if not spec.is_file() or not ckpt.is_file():
        raise GfdslError([diag("E803", None, None, path=str(run), why=f"it holds no spec.gfn and {CKPT}",
                               hint="pass a folder written by `gfdsl run`")])
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    c = check_file(spec, info.get("overrides") or {})
    tensors, meta = read_checkpoint(ckpt)
    if meta.get("spec_hash") != spec_hash(c.source.text):
        raise GfdslError([diag("E803", None, None, path=str(run),
                               why=f"{CKPT} was written for a different spec.gfn (hash mismatch)",
                               hint="restore the spec.gfn the run was trained with")])
    model = lower(c.graph, c.source)
    restore_model(model, tensors)
    return c, model.to(resolve_device(device)), int(meta.get("step", 0))


def load_prior(model, c: Compiled, run: str) -> None:
    """A posterior's frozen prior (and the posterior's start) from a data-trained run:
    the run's model must be this posterior's prior -- the same forward kernels, nets,
    schedules and data state -- and its checkpoint's nets are loaded."""
    path, spec = Path(run) / CKPT, Path(run) / "spec.gfn"
    if not path.is_file() or not spec.is_file():
        raise GfdslError([diag("E803", None, None, path=str(run), why=f"it holds no spec.gfn and {CKPT}",
                               hint="--prior takes the folder of a finished `gfdsl run` of the prior")])
    info = json.loads((Path(run) / "run.json").read_text()) if (Path(run) / "run.json").is_file() else {}
    other = check_file(spec, info.get("overrides") or {}).graph.graph
    diff = _prior_difference(c.graph.graph, other)
    if diff:
        raise GfdslError([diag("E803", None, None, path=str(run), why=f"its model is not this posterior's prior: {diff}",
                               hint="pass a run of the prior's own spec (the same steps, nets and schedules)")])
    tensors, _ = read_checkpoint(path)
    restore_model(model, tensors, prefix="nets.")
    model.freeze_prior()


def _prior_difference(G: dict, other: dict) -> str | None:
    """What differs between a posterior's forward kernels (and what they read: nets,
    schedules, the data state) and a prior run's, or None."""
    def fwd(g):
        return {k: (v["entry"], v["args"]) for k, v in g["kernels"].items() if v["role"] in ("forward", "prior")}

    mine, theirs = fwd(G), fwd(other)
    for k in sorted(set(mine) | set(theirs)):
        if mine.get(k) != theirs.get(k):
            return f"kernel {k} is {theirs.get(k, ('none',))[0]}() there, {mine.get(k, ('none',))[0]}() here" \
                if (mine.get(k) or ("",))[0] != (theirs.get(k) or ("",))[0] else f"kernel {k}'s arguments differ"
    for what in ("nets", "schedules"):
        for n in sorted(set(G[what]) | set(other[what])):
            a, b = G[what].get(n), other[what].get(n)
            if (a and (a["entry"], a["args"])) != (b and (b["entry"], b["args"])):
                return f"{what[:-1]} {n} differs ({_call_text(b)} there, {_call_text(a)} here)"
    return None


def _call_text(c: dict | None) -> str:
    if c is None:
        return "none"
    return c["entry"] + "(" + ", ".join(f"{k} = {v}" for k, v in sorted(c["args"].items())) + ")"


def sample_run(run: str, n: int, out: str | None, device: str = "cpu", seed: int = 0) -> str:
    from gfdsl.engine.evaluate import draw_samples

    c, model, _ = load_model(Path(run), device)
    model.eval()
    torch.manual_seed(seed)
    samples = draw_samples(model, n)
    path = out or str(Path(run) / f"samples_{n}.npy")
    atomic_write(path, npy_bytes(samples))
    return path


def eval_run(run: str, k: int | None, n: int | None, device: str = "cpu") -> dict:
    from gfdsl.engine.evaluate import evaluate

    c, model, step = load_model(Path(run), device)
    model.eval()
    _, test_x = load_data(c)
    s = c.graph.graph["train"]
    ev = evaluate(model, test_x, k or s["eval_k"], n, s["seed"])
    ev["step"] = step
    return ev
