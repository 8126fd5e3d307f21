"""Training, sampling and evaluation of a compiled spec, with run directories.

A run directory holds:
  spec.gfn            the spec exactly as it ran
  run.json            settings, overrides, device, spec hash
  metrics.jsonl       one JSON line per log interval (step, loss, terms, speed)
  checkpoint.safetensors  the latest good checkpoint: parameters, optimizer and RNG
                      states, with the spec hash and step in its metadata (one file,
                      replaced atomically, so a kill never leaves a torn checkpoint)
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

from gfdsl.engine import distributed
from gfdsl.driver import Compiled, check_file
from gfdsl.errors import GfdslError, diag
from gfdsl.files import atomic_write


@dataclass
class RunOptions:
    steps: int | None = None
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
    on_checkpoint: object = None  # Python API: called as f(step, model) after each checkpoint


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


CKPT = "checkpoint.safetensors"


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
    """One safetensors file (never pickle) with model, optimizer and RNG states, written
    atomically: a kill at any moment leaves either the previous checkpoint or this one."""
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


def restore_model(model, tensors: dict[str, torch.Tensor]) -> None:
    own = _params_and_buffers(model)
    saved = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    if set(own) != set(saved):
        raise GfdslError([diag("E803", None, None, path="checkpoint", why="its tensors do not match the model",
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


def _data(c: Compiled):
    from gfdsl.runtime.data import load

    g = c.graph
    if g.graph["kind"] == "reward":  # no data: the loop's batch is B empty rows
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


def evaluate(model, test: torch.Tensor, k: int, n: int | None, seed: int) -> dict:
    if test is None:  # a reward-driven model: exact where the space can be enumerated
        return _evaluate_reward(model, seed)
    torch.manual_seed(seed + 1)
    x = test if n is None else test[:n]
    ll = model.log_likelihood(x.to(model.device), k=k)
    nll = float(-ll.mean())
    out = {"test_nll_nats": nll, "n_eval": int(x.shape[0]),
           "nll_estimator": {"name": "exact"} if model.exact else {"name": "iwae", "k": k}}
    # bits per dimension only where the likelihood is a probability of discrete pixels: binary
    # or categorical data, or real data scored through a discretised decoder
    discrete = model.data_dtype in ("binary", "cat") or any(getattr(k, "levels", 0) for k in model.kernels.values())
    if discrete and model.data_shape and int(np.prod(model.data_shape)) >= 16 and model.spec["dataset"]["entry"] == "digits":
        out["test_bpd"] = nll / (int(np.prod(model.data_shape)) * math.log(2))
    return out


@torch.no_grad()
def _evaluate_reward(model, seed: int, n: int = 10_000) -> dict:
    """Exact L1 and log Z error where the space is enumerable; otherwise what samples
    can tell: the mean log-reward of n samples and the number of distinct ones."""
    if model.exact_ok:
        return {"evaluation": "exact", **model.exact()}
    torch.manual_seed(seed + 1)
    x = model.sample(n).states[-1]
    return {"evaluation": "sampled", "n_samples": n, "mean_log_reward": float(model.reward(x).mean()),
            "distinct": int(torch.unique(x, dim=0).shape[0]), "log_z_model": model.log_z_model()}


@torch.no_grad()
def draw_samples(model, n: int) -> np.ndarray:
    x = model.sample(n).states[-1]
    x = (x.cpu().numpy() if not x.is_floating_point() else x.float().cpu().numpy())  # discrete states stay ints
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


def train(spec: str | None, opts: RunOptions, overrides: dict[str, int] | None = None,
          resume: str | None = None) -> dict:
    """Train a spec (or resume the run in `resume`); write the run directory; return the
    summary. Resuming restores parameters, optimizer and RNG states, so a run killed and
    resumed ends bit for bit where an uninterrupted one would (CPU, same thread count)."""
    from gfdsl.compile.lower import lower

    if resume:
        out = Path(resume)
        info = _read_run(out)
        spec_path, overrides = out / "spec.gfn", info.get("overrides") or {}
        c = check_file(spec_path, overrides)
        tensors, meta = read_checkpoint(out / CKPT) if (out / CKPT).is_file() else (None, None)
        if meta is not None and meta.get("spec_hash") != spec_hash(c.source.text):
            raise GfdslError([diag("E803", None, None, path=str(out),
                                   why=f"its spec.gfn changed since {CKPT} was written (hash mismatch)",
                                   hint="restore the spec.gfn the run was trained with, or start a new run")])
        steps, batch, lr, seed = info["steps"], info["batch"], info["lr"], info["seed"]
        threads, dev_name, compiled_loss = info["threads"], info["device_request"], info["compile"]
        amp = info.get("amp", False)
        eval_k = info["eval_k"]
        spec = info["spec"]
    else:
        c = check_file(spec, overrides)
        s0 = dict(c.graph.graph["train"])
        steps = opts.steps or s0["steps"]
        batch = opts.batch or s0["batch"]
        lr = opts.lr or s0["lr"]
        seed = s0["seed"] if opts.seed is None else opts.seed
        threads, dev_name, compiled_loss = opts.threads, opts.device, opts.compile
        amp = opts.amp
        eval_k = opts.eval_k or s0["eval_k"]
        out = Path(opts.out or f"runs/{Path(spec).stem}")
        tensors = meta = None
    G = c.graph.graph
    s = dict(G["train"])
    ranks = distributed.launched()
    device = distributed.init(ranks, resolve_device(dev_name))
    torch.set_num_threads(max(1, threads))
    shash = spec_hash(c.source.text)
    if batch % ranks.world:
        raise GfdslError([diag("E806", None, None, path="--batch", batch=batch, world=ranks.world)])
    if not resume and ranks.main:  # only rank 0 writes the run directory
        _prepare_dir(out)
        atomic_write(str(out / "spec.gfn"), c.source.text.encode("utf-8"))
        _write_json(out / "run.json", {"spec": str(spec), "spec_hash": shash, "overrides": overrides or {},
                                       "steps": steps, "batch": batch, "lr": lr, "seed": seed,
                                       "device": str(device), "device_request": dev_name, "threads": threads,
                                       "compile": compiled_loss, "amp": amp, "eval_k": eval_k, "train": s,
                                       "nproc": ranks.world})
    distributed.barrier(ranks)

    torch.manual_seed(seed)
    np.random.seed(seed)
    train_x, test_x = _data(c)
    model = lower(c.graph, c.source).to(device)
    model.objective.total_steps = steps
    train_x = train_x.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[s["optimizer"]]
    if G["kind"] == "reward":
        from gfdsl.engine.reward_model import param_groups

        groups = param_groups(model, lr)
    else:
        groups = [{"params": params, "lr": lr}]
    for g in groups:
        g["base_lr"] = g["lr"]  # warm-up scales each group from its own rate
    opt = make_optimizer(opt_cls, groups, lr, s["weight_decay"])
    gen = torch.Generator(device=device).manual_seed(seed)
    start = 0
    if tensors is not None:
        restore_model(model, tensors)
        restore_optimizer(opt, tensors, meta)
        torch.set_rng_state(tensors["rng.torch"])
        gen.set_state(tensors["rng.data"])
        if "rng.cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        start = int(meta["step"])
    shard = batch // ranks.world
    if ranks.enabled:  # each rank its own noise stream (rank 0 keeps the single-process one)
        if ranks.rank:
            torch.manual_seed(seed + 7919 * ranks.rank + start)
        loss_fn_module = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=_some_params_unused(model, train_x[:shard]))
    else:
        loss_fn_module = model.loss
    if resume and ranks.main:
        _truncate_metrics(out / "metrics.jsonl", start)  # lines after the checkpoint are redone
    warm = s["warmup"]
    decay = s.get("lr_decay", "none") == "cosine"
    period = model.objective.round_length  # cosine decay restarts each IPF round: each is its own fit

    def lr_factor(step: int) -> float:
        """Multiplier of each group's base rate at 1-based `step`: a pure function of the
        step, so a resumed run follows the same schedule."""
        f = min(1.0, step / warm) if warm else 1.0
        if decay:
            f *= 0.5 * (1 + math.cos(math.pi * ((step - 1) % period) / period))
        return f
    loss_fn = torch.compile(loss_fn_module) if compiled_loss else loss_fn_module
    log_every = opts.log_every or max(1, min(500, steps // 50))
    eval_every = s.get("eval_every", 0)  # a reward-model setting (RewardTrainSettings)
    ckpt_every = s["checkpoint_every"]
    labels = _health_labels(model, c)
    n_h = len(labels)
    mf = open(out / "metrics.jsonl", "a", encoding="utf-8") if ranks.main else None
    acc = torch.zeros((), device=device)
    acc_terms: dict[str, torch.Tensor] = {}
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite value
    bad_health = torch.ones(n_h, dtype=torch.bool, device=device)
    bad_terms: dict[str, torch.Tensor] = {}
    bad_grad = torch.zeros((), dtype=torch.bool, device=device)
    t0 = time.perf_counter()
    last_t, last_step = t0, start
    good_step = start

    def rng_state() -> dict[str, torch.Tensor]:
        st = {"torch": torch.get_rng_state(), "data": gen.get_state().cpu()}
        if device.type == "cuda":
            st["cuda"] = torch.cuda.get_rng_state()
        return st

    def fail_if_bad() -> None:
        b = int(distributed.first_bad(ranks, first_bad))  # a host sync, only at log and checkpoint points
        if b >= 0:
            raise _bad_step_error(out, b, bad_health.tolist(), {k: bool(v) for k, v in bad_terms.items()},
                                  bool(bad_grad), labels, c, good_step)

    progress = _progress(opts.progress and ranks.main, steps, G["name"])
    try:
        with progress as bar:
            bar.update(start, float("nan"), 0.0)
            for step in range(start + 1, steps + 1):
                if warm or decay:
                    f = lr_factor(step)
                    for g in opt.param_groups:
                        g["lr"] = g["base_lr"] * f
                idx = torch.randint(0, train_x.shape[0], (batch,), device=device, generator=gen)
                if ranks.enabled:  # every rank draws the global batch and takes its shard
                    idx = idx[ranks.rank * shard:(ranks.rank + 1) * shard]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss, terms = loss_fn(train_x[idx], step - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grads = [p.grad for p in params if p.grad is not None]
                gnorm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=device)
                if s["grad_clip"]:
                    torch.nn.utils.clip_grads_with_norm_(params, s["grad_clip"], gnorm)
                opt.step()
                # health bookkeeping stays on the device: no sync inside a step
                ok = torch.isfinite(loss) & torch.isfinite(gnorm)
                now_bad = (first_bad < 0) & ~ok
                first_bad = torch.where(now_bad, step, first_bad)
                bad_health = torch.where(now_bad, model.objective.health, bad_health)
                bad_grad = torch.where(now_bad, ~torch.isfinite(gnorm) & torch.isfinite(loss), bad_grad)
                for k, v in terms.items():
                    bad_terms[k] = torch.where(now_bad, ~torch.isfinite(v), bad_terms.get(k, torch.zeros_like(ok)))
                acc = acc + loss.detach()
                for k, v in terms.items():
                    acc_terms[k] = acc_terms.get(k, 0) + v
                if step % log_every == 0 or step == steps:
                    n = step - last_step
                    fail_if_bad()
                    value = float(distributed.all_mean(ranks, acc)) / n
                    now = time.perf_counter()
                    rec = {"step": step, "loss": value, "steps_per_second": n / (now - last_t),
                           "elapsed": now - t0, **{f"loss_{k}": float(v) / n for k, v in acc_terms.items()}}
                    if mf is not None:
                        mf.write(json.dumps(rec) + "\n")
                        mf.flush()
                    bar.update(step, value, rec["steps_per_second"])
                if eval_every and step % eval_every == 0 and mf is not None:  # exact, reward models
                    mf.write(json.dumps({"step": step, "eval": _evaluate_reward(model, seed)}) + "\n")
                    mf.flush()
                    acc = torch.zeros((), device=device)
                    acc_terms = {}
                    last_t, last_step = now, step
                if step % ckpt_every == 0 or step == steps:
                    fail_if_bad()  # never write a checkpoint after a non-finite step
                    if ranks.main:
                        save_checkpoint(out, model, opt, step, shash, rng_state())
                        if opts.on_checkpoint is not None:
                            opts.on_checkpoint(step, model)
                    good_step = step
    finally:
        if mf is not None:
            mf.close()
    train_seconds = time.perf_counter() - t0
    distributed.finish(ranks)
    if not ranks.main:
        return {}
    model.eval()
    ev = evaluate(model, test_x, eval_k, opts.eval_n, seed)
    reward = G["kind"] == "reward"
    n_samples = opts.samples or (2000 if reward or int(np.prod(model.data_shape)) <= 2 else 64)
    torch.manual_seed(seed + 2)
    samples = draw_samples(model, n_samples)
    atomic_write(str(out / "samples.npy"), _npy_bytes(samples))
    if reward:
        from gfdsl.engine.plots import plot_reward

        plot_reward(model, samples, out / "samples.png", f"{G['name']}: {steps} steps, " + (
            f"exact L1 {ev['exact_l1']:.4f}" if ev["evaluation"] == "exact" else
            f"mean log R {ev['mean_log_reward']:.3f}"))
    else:
        plot_samples(samples, test_x.cpu().numpy(), out / "samples.png",
                     f"{G['name']}: {steps} steps, test NLL {ev['test_nll_nats']:.3f} nats")
    done = steps - start
    summary = {
        "spec": str(spec), "model": G["name"], "steps": steps, "batch": batch, "lr": lr, "seed": seed,
        "train_seconds": train_seconds, "steps_per_second": done / train_seconds if done else 0.0,
        "resumed_from_step": start if resume else None,
        **ev, "data": {"entry": G["dataset"]["entry"], "args": G["dataset"]["args"], "n_train": int(train_x.shape[0]),
                       "n_test": int(test_x.shape[0])} if not reward else None,
        "reward": {"entry": G["reward"]["entry"], "args": G["reward"]["args"]} if reward else None,
        "device": str(device), "threads": threads, "nproc": ranks.world, "spec_hash": shash,
        "parameters": sum(p.numel() for p in params),
    }
    _write_json(out / "summary.json", summary)
    return summary


def make_optimizer(opt_cls, groups: list[dict], lr: float, weight_decay: float):
    """The optimizer, with PyTorch's fused kernel for Adam/AdamW (one kernel for all
    parameters; same update rule as the default loop)."""
    fused = {"fused": True} if opt_cls in (torch.optim.Adam, torch.optim.AdamW) else {}
    return opt_cls(groups, lr=lr, weight_decay=weight_decay, **fused)


def _some_params_unused(model, x: torch.Tensor) -> bool:
    """Does one loss leave some parameter without a gradient (a detached policy, an IPF
    phase)? DDP must then look for unused parameters each step; otherwise it need not.
    The probe leaves the RNG and the gradients as they were."""
    state = torch.get_rng_state()
    try:
        loss, _ = model.loss(x, 0)
        loss.backward()
        unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
        if any(t["term"] == "ipf" for t in model.spec["objective"]):
            unused = True  # the other policy rests in alternate rounds
    finally:
        model.zero_grad(set_to_none=True)
        torch.set_rng_state(state)
    return unused


def _read_run(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GfdslError([diag("E803", None, None, path=str(out), why=f"its run.json cannot be read ({e})",
                               hint="pass a folder written by `gfdsl run`")]) from None


def _truncate_metrics(path: Path, step: int) -> None:
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


def _health_labels(model, c: Compiled) -> list[str]:
    """What each entry of Objective.health stands for: the prior, then P_F and P_B of each
    step, as `kernel entry() at path:line:col (step a -> b)`."""
    G = c.graph.graph
    if G["kind"] == "reward":
        return [f"{pol} policy {G['policies'][d]['entry']}() at {c.source.path}:{G['policies'][d]['span'][0]}:"
                f"{G['policies'][d]['span'][1]}" for pol, d in (("P_F", "forward"), ("P_B", "backward"))]
    names = model.plan.names
    out = [f"the prior of {G['source']}"]
    for direction in ("fwd", "bwd"):
        for s in model.plan.steps:
            fwd = s.fwd.replace(":", ".")  # ModuleDict key -> IR kernel id
            kid = fwd if direction == "fwd" else (s.bwd.replace(":", ".") if s.bwd else "inv:" + fwd)
            k = G["kernels"][kid]
            pol = "P_F" if direction == "fwd" else "P_B"
            out.append(f"{pol} kernel {k['entry']}() at {c.source.path}:{k['span'][0]}:{k['span'][1]} "
                       f"(step {names[s.src]} -> {names[s.dst]})")
    return out


def _bad_step_error(out: Path, step: int, health: list[bool], terms: dict[str, bool], grad: bool,
                    labels: list[str], c: Compiled, good_step: int) -> GfdslError:
    bad = [lab for lab, ok in zip(labels, health) if not ok]
    which = [k for k, v in terms.items() if v]
    if grad and not which:
        why = "the gradient is not finite"
    else:
        why = "the loss is not finite" + (f" in objective term {', '.join(which)}" if which else "")
    why += f"; first non-finite log-probability: {bad[0]}" if bad else ""
    kept = f"the last good checkpoint (step {good_step}) is kept in {out}" if good_step else \
        "no checkpoint had been written yet"
    return GfdslError([diag("E804", None, None, path=str(out), step=step, why=why,
                            hint=f"lower the learning rate or set grad_clip in the train block; {kept}")])


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
