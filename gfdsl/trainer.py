"""Training, sampling and evaluation of a compiled spec, with run directories.

A run directory holds:
  spec.gfn            the spec exactly as it ran
  run.json            settings, overrides, device, spec hash
  metrics.jsonl       one JSON line per log interval (step, loss, terms, speed)
  model.safetensors   the latest good checkpoint (spec hash and step in its metadata)
  optimizer.safetensors
  samples.npy         samples from P_F, shaped like the data state
  samples.png         samples beside test data (2-D scatter or image grid)
  summary.json        spec, model, steps, seed, train_seconds, steps_per_second,
                      test_nll_nats (and test_bpd for images), nll_estimator, data, ...
Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gfdsl.driver import Compiled, check_file
from gfdsl.errors import GfdslError, diag
from gfdsl.render import atomic_write


@dataclass
class RunOptions:
    steps: int | None = None
    batch: int | None = None
    lr: float | None = None
    seed: int | None = None
    device: str = "auto"
    threads: int = 1
    compile: bool = False
    out: str | None = None
    eval_k: int | None = None
    eval_n: int | None = 2000  # test points used for test_nll_nats (None: all)
    samples: int | None = None
    progress: bool = True
    log_every: int | None = None


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GfdslError([diag("E805", None, None, path="--device", device=name, why="no CUDA device is visible")])
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise GfdslError([diag("E805", None, None, path="--device", device=name, why="expected auto, cpu or cuda")])
    return torch.device(name)


def _write_json(path: Path, obj) -> None:
    atomic_write(str(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _prepare_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise GfdslError([diag("E803", None, None, path=str(out), why="it already holds files",
                               hint="choose another --out, or remove the folder")])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GfdslError([diag("E803", None, None, path=str(out), why=e.strerror or str(e),
                               hint="check that the parent folder is writable")]) from None


def save_checkpoint(model, opt, out: Path, step: int, shash: str) -> None:
    """Model and optimizer state in safetensors (never pickle), written atomically."""
    from safetensors.torch import save_file, save_model

    meta = {"spec_hash": shash, "step": str(step), "format": "gfdsl-1"}
    tmp = out / ".model.safetensors.tmp"
    save_model(model, str(tmp), metadata=meta)  # de-duplicates nets shared by kernels
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / "model.safetensors")
    sd = opt.state_dict()
    tensors, groups = {}, sd["param_groups"]
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{pid}.{k}"] = v.detach().clone().contiguous() if torch.is_tensor(v) else torch.tensor(v)
    tmp = out / ".optimizer.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={**meta, "param_groups": json.dumps(groups)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / "optimizer.safetensors")


def load_model(run: Path, device: str = "cpu"):
    """Rebuild a run's model from its spec.gfn and model.safetensors."""
    from safetensors import safe_open
    from safetensors.torch import load_model as st_load

    from gfdsl.lower import lower

    spec = run / "spec.gfn"
    ckpt = run / "model.safetensors"
    if not spec.is_file() or not ckpt.is_file():
        raise GfdslError([diag("E803", None, None, path=str(run), why="it holds no spec.gfn and model.safetensors",
                               hint="pass a folder written by `gfdsl run`")])
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    c = check_file(spec, info.get("overrides") or {})
    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("spec_hash") != spec_hash(c.source.text):
        raise GfdslError([diag("E803", None, None, path=str(run),
                               why="model.safetensors was written for a different spec.gfn (hash mismatch)",
                               hint="restore the spec.gfn the run was trained with")])
    model = lower(c.graph, c.source)
    st_load(model, str(ckpt), device="cpu")
    dev = resolve_device(device)
    return c, model.to(dev), int(meta.get("step", 0))


def _data(c: Compiled):
    from gfdsl.runtime.data import load

    g = c.graph
    return load(g.graph["dataset"], g.nodes[g.graph["data"]], Path(c.source.path).resolve().parent)


def evaluate(model, test: torch.Tensor, k: int, n: int | None, seed: int) -> dict:
    torch.manual_seed(seed + 1)
    x = test if n is None else test[:n]
    ll = model.log_likelihood(x.to(model.device), k=k)
    nll = float(-ll.mean())
    out = {"test_nll_nats": nll, "n_eval": int(x.shape[0]),
           "nll_estimator": {"name": "exact"} if model.exact else {"name": "iwae", "k": k}}
    if model.data_shape and int(np.prod(model.data_shape)) >= 16 and model.spec["dataset"]["entry"] == "digits":
        out["test_bpd"] = nll / (int(np.prod(model.data_shape)) * math.log(2))
    return out


@torch.no_grad()
def draw_samples(model, n: int) -> np.ndarray:
    x = model.sample(n).states[-1].float().cpu().numpy()
    return x.reshape(n, *model.data_shape) if model.data_shape else x


def plot_samples(samples: np.ndarray, test: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = samples.reshape(len(samples), -1)
    if flat.shape[1] == 2:
        fig, ax = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
        t = test.reshape(len(test), -1)[:len(flat)]
        lim = np.percentile(np.abs(t), 99.5) * 1.3
        for a, d, name in ((ax[0], t, "test data"), (ax[1], flat, "samples (P_F)")):
            a.scatter(d[:, 0], d[:, 1], s=1, alpha=0.4)
            a.set_title(name)
            a.set_xlim(-lim, lim)
            a.set_ylim(-lim, lim)
            a.set_aspect("equal")
    else:
        side = int(round(math.sqrt(flat.shape[1])))
        n = min(64, len(flat))
        fig, axes = plt.subplots(8, 16, figsize=(12, 6.5))
        t = test.reshape(len(test), -1)
        for j, a in enumerate(axes.flat):
            src = t if j % 16 < 8 else flat
            idx = (j // 16) * 8 + j % 8
            if idx < n and side * side == flat.shape[1]:
                a.imshow(src[idx].reshape(side, side), cmap="gray_r")
            a.axis("off")
        fig.text(0.25, 0.95, "test data", ha="center")
        fig.text(0.75, 0.95, "samples (P_F)", ha="center")
    fig.suptitle(title, y=0.995, fontsize=9)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def train(spec: str, opts: RunOptions, overrides: dict[str, int] | None = None) -> dict:
    """Train a spec; write its run directory; return the summary."""
    from gfdsl.lower import lower

    c = check_file(spec, overrides)
    G = c.graph.graph
    s = dict(G["train"])
    steps = opts.steps or s["steps"]
    batch = opts.batch or s["batch"]
    lr = opts.lr or s["lr"]
    seed = s["seed"] if opts.seed is None else opts.seed
    eval_k = opts.eval_k or s["eval_k"]
    device = resolve_device(opts.device)
    torch.set_num_threads(max(1, opts.threads))
    out = Path(opts.out or f"runs/{Path(spec).stem}")
    _prepare_dir(out)
    shash = spec_hash(c.source.text)
    atomic_write(str(out / "spec.gfn"), c.source.text.encode("utf-8"))
    _write_json(out / "run.json", {"spec": str(spec), "spec_hash": shash, "overrides": overrides or {},
                                   "steps": steps, "batch": batch, "lr": lr, "seed": seed, "device": str(device),
                                   "threads": opts.threads, "compile": opts.compile, "train": s})

    torch.manual_seed(seed)
    np.random.seed(seed)
    train_x, test_x = _data(c)
    model = lower(c.graph, c.source).to(device)
    model.objective.total_steps = steps
    train_x = train_x.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[s["optimizer"]]
    opt = opt_cls(params, lr=lr, weight_decay=s["weight_decay"])
    warm = s["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warm) if warm else 1.0)
    loss_fn = model.loss
    if opts.compile:
        loss_fn = torch.compile(model.loss)
    gen = torch.Generator(device=device).manual_seed(seed)
    log_every = opts.log_every or max(1, min(500, steps // 50))
    metrics_path = out / "metrics.jsonl"
    mf = open(metrics_path, "a", encoding="utf-8")
    acc = torch.zeros((), device=device)
    acc_terms: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()
    last_t, last_step = t0, 0
    ckpt_every = s["checkpoint_every"]
    progress = _progress(opts.progress, steps, G["name"])
    try:
        with progress as bar:
            for step in range(1, steps + 1):
                idx = torch.randint(0, train_x.shape[0], (batch,), device=device, generator=gen)
                loss, terms = loss_fn(train_x[idx], step - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if s["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(params, s["grad_clip"])
                opt.step()
                sched.step()
                acc = acc + loss.detach()
                for k, v in terms.items():
                    acc_terms[k] = acc_terms.get(k, 0) + v
                if step % log_every == 0 or step == steps:
                    n = step - last_step
                    value = float(acc) / n  # the one host sync, once per log interval
                    now = time.perf_counter()
                    rec = {"step": step, "loss": value, "steps_per_second": n / (now - last_t),
                           "elapsed": now - t0, **{f"loss_{k}": float(v) / n for k, v in acc_terms.items()}}
                    if not math.isfinite(value):
                        bad = next((k for k, v in acc_terms.items() if not math.isfinite(float(v))), "loss")
                        raise GfdslError([diag("E804", None, None, path=str(out), step=step,
                                               why=f"the objective term {bad} is not finite ({value})",
                                               hint="lower the learning rate or set grad_clip; the last good "
                                                    "checkpoint is kept in the run directory")])
                    mf.write(json.dumps(rec) + "\n")
                    mf.flush()
                    bar.update(step, value, rec["steps_per_second"])
                    acc = torch.zeros((), device=device)
                    acc_terms = {}
                    last_t, last_step = now, step
                if step % ckpt_every == 0 and step != steps:
                    save_checkpoint(model, opt, out, step, shash)
    finally:
        mf.close()
    train_seconds = time.perf_counter() - t0
    save_checkpoint(model, opt, out, steps, shash)
    model.eval()
    ev = evaluate(model, test_x, eval_k, opts.eval_n, seed)
    n_samples = opts.samples or (2000 if int(np.prod(model.data_shape)) <= 2 else 64)
    torch.manual_seed(seed + 2)
    samples = draw_samples(model, n_samples)
    buf = _npy_bytes(samples)
    atomic_write(str(out / "samples.npy"), buf)
    plot_samples(samples, test_x.cpu().numpy(), out / "samples.png",
                 f"{G['name']}: {steps} steps, test NLL {ev['test_nll_nats']:.3f} nats")
    summary = {
        "spec": str(spec), "model": G["name"], "steps": steps, "batch": batch, "lr": lr, "seed": seed,
        "train_seconds": train_seconds, "steps_per_second": steps / train_seconds,
        **ev, "data": {"entry": G["dataset"]["entry"], "args": G["dataset"]["args"], "n_train": int(train_x.shape[0]), "n_test": int(test_x.shape[0])},
        "device": str(device), "threads": opts.threads, "spec_hash": shash,
        "parameters": sum(p.numel() for p in params),
    }
    _write_json(out / "summary.json", summary)
    return summary


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, a, allow_pickle=False)
    return f.getvalue()


class _progress:
    """A rich progress bar with loss and speed, or nothing when not wanted."""

    def __init__(self, enabled: bool, total: int, name: str):
        self.enabled, self.total, self.name = enabled, total, name

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} it/s"),
                          TimeRemainingColumn(), transient=False)
        self.p.__enter__()
        self.task = self.p.add_task(self.name, total=self.total, loss="-", speed="-")
        return self

    def update(self, step: int, loss: float, speed: float) -> None:
        if self.enabled:
            self.p.update(self.task, completed=step, loss=f"{loss:.4f}", speed=f"{speed:.0f}")

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)
        return False


def sample_run(run: str, n: int, out: str | None, device: str = "cpu", seed: int = 0) -> str:
    c, model, _ = load_model(Path(run), device)
    model.eval()
    torch.manual_seed(seed)
    samples = draw_samples(model, n)
    path = out or str(Path(run) / f"samples_{n}.npy")
    atomic_write(path, _npy_bytes(samples))
    return path


def eval_run(run: str, k: int | None, n: int | None, device: str = "cpu") -> dict:
    c, model, step = load_model(Path(run), device)
    model.eval()
    _, test_x = _data(c)
    s = c.graph.graph["train"]
    ev = evaluate(model, test_x, k or s["eval_k"], n, s["seed"])
    ev["step"] = step
    return ev


__all__ = ["RunOptions", "train", "sample_run", "eval_run", "load_model"]
