"""The training loop: one loop for every model, from a spec (or a run to resume) to a
run directory.

`train()` chains four parts, each short: `_setup` resolves settings from the spec, the
options and a resumed run's run.json; `_build` lowers the model, loads the data and
makes the optimizer (restoring a checkpoint); `Loop` runs the gradient steps -- loss,
backward, clipping, the optimizer, health bookkeeping on the device (no sync inside a
step), log, evaluation and checkpoint points, a posterior's stage boundary, IPF rounds
--; `_finish` evaluates, samples, plots and writes summary.json.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gfdsl import plugins
from gfdsl.driver import Compiled, check_file
from gfdsl.engine import distributed
from gfdsl.engine.checkpoint import (
    BEST, CKPT, read_checkpoint, read_latest, restore_model, restore_optimizer, save_checkpoint, spec_hash,
)
from gfdsl.engine.baselines import baselines
from gfdsl.engine.ema import EMA
from gfdsl.engine.trackers import Trackers, check_installed
from gfdsl.engine.validation import Validation, split
from gfdsl.engine.evaluate import draw_given, draw_samples, evaluate
from gfdsl.engine.module import param_groups
from gfdsl.engine.rundir import (
    RunOptions, check_cost, check_flags, check_out, input_copies, json_bytes, load_data, load_prior, metrics_records, npy_bytes, read_run, record_inputs, resolve_device, run_inputs,
    eval_points, start_dir, truncate_metrics, write_json,
)
from gfdsl.errors import GfdslError, diag
from gfdsl.runtime.conditions import label
from gfdsl.files import Inputs, atomic_write
from gfdsl.lang.source import Span


@dataclass
class Setup:
    """A run's settings, resolved once."""

    c: Compiled
    spec: str
    out: Path
    overrides: dict
    steps: int  # all steps: a posterior's prior stage, then its own
    prior_steps: int
    batch: int
    lr: float
    seed: int
    threads: int
    device: str
    compile: bool
    amp: bool
    eval_k: int
    prior_run: str | None
    inputs: Inputs
    record: dict  # run.json's record of the inputs (gfdsl.engine.rundir.record_inputs)
    resume: bool = False
    tensors: dict | None = None
    meta: dict | None = None


def _setup(spec: str | None, opts: RunOptions, overrides: dict | None, resume: str | None) -> Setup:
    check_flags(opts)
    if resume:
        out = Path(resume)
        info = read_run(out)
        c = check_file(out / "spec.gfn", info.get("overrides") or {}, inputs=run_inputs(out, info))
        tensors, meta = read_latest(out) or (None, None)
        if meta is not None and meta.get("spec_hash") != spec_hash(c.source.text):
            raise GfdslError([diag("E803", None, None, path=str(out),
                                   why=f"its spec.gfn changed since {CKPT} was written (hash mismatch)",
                                   hint="restore the spec.gfn the run was trained with, or start a new run")])
        return Setup(c, info["spec"], out, info.get("overrides") or {}, info["steps"], info.get("prior_steps", 0),
                     info["batch"], info["lr"], info["seed"], info["threads"], info["device_request"],
                     info["compile"], info.get("amp", False), info["eval_k"], info.get("prior"),
                     run_inputs(out, info), {}, True, tensors, meta)
    overrides = dict(overrides or {})
    for name in ("val", "patience"):  # flags that are train settings: checked (and kept) as `--set` is
        if getattr(opts, name) is not None:
            overrides[name] = getattr(opts, name)
    c = check_file(spec, overrides)
    inputs = Inputs.beside(c.source.path)
    s0 = c.graph.graph["train"]
    prior_steps = _prior_steps(c, opts)
    return Setup(c, str(spec), Path(opts.out or f"runs/{Path(spec).stem}"), overrides,
                 prior_steps + (opts.steps or s0["steps"]), prior_steps, opts.batch or s0["batch"],
                 opts.lr or s0["lr"], s0["seed"] if opts.seed is None else opts.seed, opts.threads, opts.device,
                 opts.compile, opts.amp, opts.eval_k or s0["eval_k"], opts.prior, inputs, record_inputs(c, inputs))


def _prior_steps(c: Compiled, opts: RunOptions) -> int:
    """A posterior's prior stage: its steps, none when the prior comes from a run."""
    G = c.graph.graph
    rtb = any(t["term"] == "rtb" for t in G["objective"])
    if not rtb:
        if opts.prior:
            raise GfdslError([diag("E802", None, None, path="--prior", message="--prior loads the prior of a posterior, "
                                   "but this model's objective has no rtb", hint="drop --prior")])
        return 0
    if opts.prior:
        return 0
    n = G["train"]["prior_steps"] if opts.prior_steps is None else opts.prior_steps
    if not G["prior_objective"] or n == 0:
        span = G["objective"][0]["span"]
        raise GfdslError([diag("E802", c.source, Span(*span), message="this posterior has no prior to fine-tune: "
                               + ("its prior stage has no steps" if G["prior_objective"] else "no prior stage"),
                               hint="pass `--prior RUN` (a finished run of the prior), or write `objective = "
                                    "<data terms> then rtb` with `prior_steps = N` in the train block")])
    return n


def _start_dir(su: Setup, device: torch.device, ranks) -> None:
    """The run folder, written by rank 0 only: the spec as it ran, run.json, the copied
    inputs -- created in one atomic step (gfdsl.engine.rundir.start_dir)."""
    info = {
        "spec": su.spec, "spec_hash": spec_hash(su.c.source.text), "overrides": su.overrides, "steps": su.steps,
        "prior_steps": su.prior_steps, "prior": su.prior_run, "batch": su.batch, "lr": su.lr, "seed": su.seed,
        "device": str(device), "device_request": su.device, "threads": su.threads, "compile": su.compile,
        "amp": su.amp, "eval_k": su.eval_k, "train": su.c.graph.graph["train"], "nproc": ranks.world,
        "plugins": dict(plugins.LOADED), "plugin_modules": list(plugins.MODULES), **su.record}
    start_dir(su.out, {"spec.gfn": su.c.source.text.encode("utf-8"),
                       "run.json": json_bytes(info),
                       **input_copies(su.record, su.inputs)})


@dataclass
class Run:
    model: object
    opt: object
    gen: torch.Generator
    train_x: torch.Tensor
    test_x: torch.Tensor | None
    params: list
    start: int
    train_y: torch.Tensor | None = None  # a labelled condition's values (N,), 0-based
    test_y: torch.Tensor | None = None
    ema: EMA | None = None  # `ema = d`: the averaged weights that sampling and evaluation use
    val: Validation | None = None  # `val = f`: the held-out split, its best and early stopping

    def averaged(self):
        """The EMA weights in the model for the body (nothing changes without `ema`)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()


def _build(su: Setup, device: torch.device) -> Run:
    from gfdsl.compile.lower import lower

    torch.manual_seed(su.seed)
    np.random.seed(su.seed)
    train_x, test_x, labels = load_data(su.c, su.inputs)
    s = su.c.graph.graph["train"]
    mapped = bool(((su.c.graph.graph["dataset"] or {}).get("args") or {}).get("mmap"))
    train_x, train_y, val_x, val_y = split(train_x, None if labels is None else labels[0], s["val"], su.seed, mapped)
    model = lower(su.c.graph, su.c.source, su.inputs).to(device)
    model.objective.total_steps = su.steps
    model.objective.prior_steps = su.prior_steps
    if su.prior_run and not su.resume:
        load_prior(model, su.c, su.prior_run)
    if model.log_z_params and su.tensors is None:  # a resumed run restores its own
        init_log_z(model, s["log_z_init"], su.batch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[s["optimizer"]]
    groups = param_groups(model, s["prior_lr"] or su.lr if su.prior_steps else su.lr, s["lr_logz"])
    for g in groups:
        g["base_lr"] = g["lr"]  # warm-up scales each group from its own rate
    opt = make_optimizer(opt_cls, groups, su.lr, s["weight_decay"])
    gen = torch.Generator(device=device).manual_seed(su.seed)
    start = 0
    if su.tensors is not None:
        restore_model(model, su.tensors)
        restore_optimizer(opt, su.tensors, su.meta)
        torch.set_rng_state(su.tensors["rng.torch"])
        gen.set_state(su.tensors["rng.data"])
        if "rng.cuda" in su.tensors and device.type == "cuda":
            torch.cuda.set_rng_state(su.tensors["rng.cuda"])
        start = int(su.meta["step"])
    ema = EMA(model, s["ema"]) if s["ema"] else None
    if ema is not None and su.tensors is not None:
        ema.restore(su.tensors)
    val = Validation(s, val_x, val_y, su.meta) if val_x is not None else None
    return Run(model, opt, gen, train_x.to(device), test_x, params, start,
               None if train_y is None else train_y.to(device), None if labels is None else labels[1], ema, val)


def init_log_z(model, how: float | str, batch: int) -> None:
    """log Z's starting value: a number, or ("batch") the mean log-weight of one batch of
    P_F's trajectories -- for rtb, against the frozen prior (evaluate.log_weights). Under
    DDP, rank 0's value reaches every rank when the module is wrapped."""
    from gfdsl.engine.evaluate import log_weights

    # the scalar log Z, or the offset of a conditional log Z(c)
    z = model.log_Z if model.log_Z is not None else model.log_Z_net.offset
    if how != "batch":
        with torch.no_grad():
            z.fill_(float(how))
        return
    if model.prior_chain is not None and model.objective.prior_steps:
        return  # the prior is not trained yet: its stage's end sets nothing, log Z stays 0
    with torch.no_grad(), model.given(model.conditions.draw(batch, model.device) if model.conditions else None):
        w = log_weights(model, model.sample(batch))
        w = w[torch.isfinite(w)]
        z.fill_(float(w.mean()) if w.numel() else 0.0)


def make_optimizer(opt_cls, groups: list[dict], lr: float, weight_decay: float):
    """The optimizer, with PyTorch's fused kernel for Adam/AdamW (one kernel for all
    parameters; same update rule as the default loop)."""
    fused = {"fused": True} if opt_cls in (torch.optim.Adam, torch.optim.AdamW) else {}
    return opt_cls(groups, lr=lr, weight_decay=weight_decay, **fused)


def train(spec: str | None, opts: RunOptions, overrides: dict[str, int] | None = None,
          resume: str | None = None) -> dict:
    """Train a spec (or resume the run in `resume`); write the run directory; return the
    summary. Resuming restores parameters, optimizer and RNG states, so a run killed and
    resumed ends bit for bit where an uninterrupted one would (CPU, same thread count)."""
    su = _setup(spec, opts, overrides, resume)
    ranks = distributed.launched()
    if not su.resume and ranks.main:
        # rank 0 alone makes the folder, so rank 0 alone may refuse it (another rank would find
        # the folder rank 0 already made); before anything is built, and start_dir checks again
        check_out(su.out)
    check_installed(opts.log)
    device = distributed.init(ranks, resolve_device(su.device))
    check_cost(su.c, su.batch, opts.eval_n, su.eval_k, opts.max_memory, device)
    torch.set_num_threads(max(1, su.threads))
    if su.batch % ranks.world:
        raise GfdslError([diag("E806", None, None, path="--batch", batch=su.batch, world=ranks.world)])
    run = _build(su, device)  # every input read and the model built before any file is written
    if not su.resume and ranks.main:  # only rank 0 writes the run directory
        _start_dir(su, device, ranks)
    distributed.barrier(ranks)
    trackers = Trackers(opts.log if ranks.main else (), su.out, opts.mlflow_uri, su.c.graph.graph["name"], su.resume)
    trackers.start(su.c.source.text, read_run(su.out) if ranks.main else {})
    if su.resume and ranks.main:
        truncate_metrics(su.out / "metrics.jsonl", run.start)  # lines after the checkpoint are redone
    from gfdsl.engine.optimize import Loop

    loop = Loop(run, su, opts, ranks, device, trackers)
    loop.run()
    distributed.finish(ranks)
    if not ranks.main:
        return {}
    summary = _finish(run, su, opts, loop, ranks, device)
    trackers.finish(loop.last, summary)
    return summary


def _finish(run: Run, su: Setup, opts: RunOptions, loop, ranks, device) -> dict:
    """Evaluate, draw samples, plot them and write summary.json -- with the EMA weights
    where the run keeps them."""
    run.model.eval()
    if run.val is not None and (su.out / BEST).is_file():
        # the best validation point's weights (already the averages where `ema` is set) are the result
        restore_model(run.model, read_checkpoint(su.out / BEST)[0])
        run.ema = None
    with run.averaged():
        return _report(run, su, opts, loop, ranks, device)


def _report(run: Run, su: Setup, opts: RunOptions, loop, ranks, device) -> dict:
    from gfdsl.engine import plots

    model, G = run.model, su.c.graph.graph
    ev = evaluate(model, run.test_x, su.eval_k, opts.eval_n, su.seed, run.test_y)
    n = opts.samples or 2000  # every kind of model: samples.npy is what metrics and plots are drawn from
    torch.manual_seed(su.seed + 2)
    title = f"{G['name']}: {su.steps} steps, " + _headline(ev)
    if model.conditions:  # samples at each point of the grid (P, n, ...), a panel or row per point
        points = model.conditions.grid()
        n = opts.samples or (2000 if G["reward"] is not None or int(np.prod(model.data_shape)) <= 2 else 10)
        samples = draw_given(model, n, points)
        atomic_write(str(su.out / "samples.npy"), npy_bytes(samples))
        plots.plot_given(model, points, samples, su.out / "samples.png", title)
    else:
        samples = draw_samples(model, n)
        atomic_write(str(su.out / "samples.npy"), npy_bytes(samples))
        if G["space"] is not None:
            plots.plot_reward(model, samples, su.out / "samples.png", title)
        elif G["reward"] is not None:
            plots.plot_energy(model, samples, su.out / "samples.png", title)
        else:
            plots.plot_samples(model, samples, run.test_x.cpu().numpy(), su.out / "samples.png", title)
    from gfdsl.engine.curves import plot_curves

    plot_curves([(G["name"], metrics_records(su.out / "metrics.jsonl"))], su.out / "loss.png",
                f"{G['name']}: training curves")
    points = eval_points(su.out / "metrics.jsonl")
    if points:  # eval_every: the log Z-hat curve beside the samples
        plots.plot_log_z(points + [{"step": su.steps, "eval": ev}], ev.get("log_z_true"), su.out / "logz.png",
                         f"{G['name']}: log Z estimates over training")
    done = loop.last - run.start
    summary = {
        "spec": su.spec, "model": G["name"], "steps": su.steps, "prior_steps": su.prior_steps, "batch": su.batch,
        "lr": su.lr, "seed": su.seed, "train_seconds": loop.seconds,
        "steps_per_second": done / loop.seconds if done and loop.seconds else 0.0,
        "steps_done": loop.last, "resumed_from_step": run.start if su.resume else None, **ev,
        "data": {"entry": G["dataset"]["entry"], "args": G["dataset"]["args"], "n_train": int(run.train_x.shape[0]),
                 "n_test": int(run.test_x.shape[0])} if G["dataset"] is not None else None,
        "reward": {"entry": G["reward"]["entry"], "args": G["reward"]["args"], "form": G["reward"]["form"],
                   "temper": G["reward"].get("temper")}
        if G["reward"] is not None else None,
        "given": [label(p) for p in model.conditions.grid()] if model.conditions else None,
        "prior": su.prior_run, "rounds": loop.rounds or None, "ema": run.ema.decay if run.ema else None,
        "device": str(device), "threads": su.threads, "nproc": ranks.world, "spec_hash": spec_hash(su.c.source.text),
        "parameters": sum(p.numel() for p in run.params),
        "validation": run.val.summary(G["train"]["val"]) if run.val is not None else None,
        "baselines": baselines(G["dataset"], run.train_x, run.test_x),
        "evaluated": f"best (step {run.val.best_step})" if run.val is not None and run.val.best_step else
                     f"last (step {loop.last})",
    }
    write_json(su.out / "summary.json", summary)
    return summary


def _headline(ev: dict) -> str:
    """The one figure a plot's title and the CLI's last line quote."""
    if "exact_l1" in ev:
        return f"exact L1 {ev['exact_l1']:.4f}"
    if "delta_log_z" in ev:
        return f"Delta log Z {ev['delta_log_z']:.3f}" + (f", W2 {ev['w2']:.3f}" if "w2" in ev else "")
    if "test_nll_nats" in ev:
        return f"test NLL {ev['test_nll_nats']:.3f} nats"
    if "sliced_w2" in ev:
        return f"sliced W2 {ev['sliced_w2']:.3f}"
    return f"mean log R {ev['mean_log_reward']:.3f}, log Z-hat {ev['log_z_elbo']:.3f}"


__all__ = ["RunOptions", "train", "make_optimizer"]
