"""The `gfdsl` command line.

  gfdsl check SPEC...                       check specs; exit 1 on any error
  gfdsl compile SPEC --dump ast|ir          print a phase's canonical text
  gfdsl render SPEC -o FILE.dot|.svg|.png   draw the DAG (graphviz)
  gfdsl fmt SPEC... [--check | --write]     canonical formatting, comments kept
  gfdsl run SPEC [--steps --batch --lr --seed --device --threads --out]
                                            train; write a run directory
  gfdsl sample RUN -n N                     samples from a trained run
  gfdsl eval RUN [--k K]                    test log-likelihood of a trained run
  gfdsl sweep SPEC --set lr=1e-3,3e-4 --seeds 0-2 [-j N]   a grid of runs
  gfdsl compare RUN...                      a table and a figure of finished runs
  gfdsl list [KIND]                         everything a spec can name (plugins too)
  gfdsl explain CODE|NAME                   what an error code or registry entry means

Exit codes: 0 ok, 1 an error in a spec or data, 2 a usage error. A user never sees a
Python traceback: gfdsl errors print as `path:line:col: error[CODE]: ...`; an internal
error prints one line (set GFDSL_DEBUG=1 for the traceback). Commands that need no
torch never import it.
"""

from __future__ import annotations

import argparse
import os
import sys

from gfdsl.cli.values import parse_value
from gfdsl.errors import CATALOGUE, GfdslError, diag
from gfdsl.library.registry import KINDS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: exit 2 with a short message, no traceback
        self.print_usage(sys.stderr)
        self.exit(2, f"gfdsl: error: {message}\n")


def _overrides(items: list[str] | None) -> dict:
    """`--set NAME=VALUE` items: a dim or a train setting (the checker says which). Values
    are read as the spec would: integers, numbers, true/false, none, [lists], else text."""
    out = {}
    for text in items or []:
        name, eq, value = text.partition("=")
        if not eq or not name.strip().isidentifier() or not value.strip():
            raise _Usage(diag("E706", None, None, path="--set", text=text, why="expected NAME=VALUE").render())
        out[name.strip()] = parse_value(value.strip())
    return out


class _Usage(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gfdsl", description="A language and compiler for trajectory generative models (GFlowNets).")
    p.add_argument("--version", action="version", version=f"gfdsl {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    add_parser = sub.add_parser

    def with_plugin(*a, **kw):  # every command takes --plugin: a spec may name a plugin's entries
        sp = add_parser(*a, **kw)
        sp.add_argument("--plugin", action="append", metavar="MODULE",
                        help="load registry entries from a Python module or .py file (repeatable; "
                             "installed plugins load by themselves)")
        return sp

    sub.add_parser = with_plugin

    def with_set(sp):
        sp.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="override a dim or a train setting, e.g. --set T=4 --set lr=3e-4 (repeatable)")
        return sp

    c = with_set(sub.add_parser("check", help="check specs and report every error"))
    c.add_argument("specs", nargs="+", metavar="SPEC")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing for specs that pass")
    c.add_argument("--cost", action="store_true",
                   help="print the resource estimate: parameters, memory of a training step, evaluation work")
    c.add_argument("--batch", type=_pos_int, help="the batch size the estimate assumes (default: the spec's)")

    c = with_set(sub.add_parser("compile", help="compile a spec and dump a phase"))
    c.add_argument("spec", metavar="SPEC")
    c.add_argument("--dump", choices=["ast", "ir"], default="ir", help="which phase to print (default: ir)")
    c.add_argument("-o", "--out", metavar="FILE", help="write the dump to FILE instead of standard output")

    c = with_set(sub.add_parser("render", help="draw the model's DAG"))
    c.add_argument("spec", metavar="SPEC")
    c.add_argument("-o", "--out", metavar="FILE", required=True, help="output: .dot, .svg, .png or .pdf")
    c.add_argument("--unroll", type=int, default=6, metavar="K",
                   help="fold indexed steps with more than K edges into a plate (default 6)")

    c = sub.add_parser("fmt", help="print specs in canonical form")
    c.add_argument("specs", nargs="+", metavar="SPEC")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if a spec is not canonical; change nothing")
    g.add_argument("-w", "--write", action="store_true", help="rewrite the files in place")

    _run_parser(with_set(sub.add_parser("run", help="train a spec and write a run directory")))
    c = sub.add_parser("sample", help="draw samples from a trained run")
    c.add_argument("run", metavar="RUN")
    c.add_argument("-n", type=_pos_int, default=1000, help="number of samples (default 1000)")
    c.add_argument("-o", "--out", metavar="FILE.npy", help="output (default RUN/samples_N.npy)")
    c.add_argument("--seed", type=_nonneg_int, default=0)
    c.add_argument("--device", default="cpu")
    c.add_argument("--given", action="append", metavar="NAME=VALUE",
                   help="a conditional model: sample at this condition value (repeatable; default: a row "
                        "per class, or per eval_given value)")
    c.add_argument("--guidance", type=_nonneg_float, metavar="S",
                   help="classifier-free guidance scale (0: unconditional, 1: conditional, >1: guided); "
                        "needs a model trained with cond_dropout")
    c.add_argument("--steps", type=_pos_int, metavar="S",
                   help="a DDPM chain: sample in S respaced steps instead of all T (strided ancestral; "
                        "the likelihood stays the full chain's); an ODE flow: S solver steps")
    c.add_argument("--eta", type=_nonneg_float, metavar="E",
                   help="a DDPM chain: DDIM sampling with noise level E in [0, 1] (0: deterministic)")

    c = sub.add_parser("eval", help="estimate the test log-likelihood of a trained run")
    c.add_argument("run", metavar="RUN")
    c.add_argument("--k", "--eval-k", type=_pos_int, help="backward trajectories per point (default: the spec's eval_k)")
    c.add_argument("--n", "--eval-n", type=_pos_int, help="test points (default: all)")
    c.add_argument("--device", default="cpu")

    _experiment_parsers(sub)
    return p


def _run_parser(c) -> None:
    """`gfdsl run`'s options."""
    c.add_argument("spec", metavar="SPEC", nargs="?", help="the spec to train (omit with --resume)")
    c.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its last checkpoint")
    c.add_argument("--steps", type=_pos_int, help="gradient steps (default: the spec's train block)")
    c.add_argument("--batch", type=_pos_int, help="examples per step")
    c.add_argument("--lr", type=_pos_float, help="learning rate")
    c.add_argument("--seed", type=_nonneg_int, help="random seed")
    c.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    c.add_argument("--threads", type=_pos_int, default=1,
                   help="CPU threads (default 1: on a loaded 2-core machine more threads were far slower)")
    c.add_argument("--compile", action="store_true", help="wrap the loss in torch.compile")
    c.add_argument("--amp", action="store_true",
                   help="bf16 autocast for the nets (log-probabilities stay float32); for GPUs with bf16")
    c.add_argument("--nproc", type=_pos_int, default=1,
                   help="train with N processes (DistributedDataParallel via torchrun; gloo on CPU, NCCL on CUDA)")
    c.add_argument("--out", metavar="DIR", help="run directory (default runs/<spec name>); must be new or empty")
    c.add_argument("--prior", metavar="RUN",
                   help="a posterior (`... then rtb`): load its frozen prior from this finished run, skipping the "
                        "prior stage")
    c.add_argument("--prior-steps", type=_nonneg_int, help="a posterior: steps of its prior stage (default: the spec's)")
    c.add_argument("--eval-k", type=_pos_int, help="backward trajectories per test point for the likelihood")
    c.add_argument("--eval-n", type=_pos_int, default=2000, help="test points evaluated (default 2000)")
    c.add_argument("--samples", type=_pos_int, metavar="N",
                   help="samples drawn at the end into samples.npy and samples.png (default 2000; a conditional "
                        "model: per condition value, default 10 for images)")
    c.add_argument("--val", type=_val_fraction, metavar="F",
                   help="hold out this share of the training set for validation: its NLL during training, "
                        "best.safetensors at its lowest (the train setting `val`)")
    c.add_argument("--patience", type=_nonneg_int, metavar="N",
                   help="stop after N validation points without a lower validation NLL (needs --val)")
    c.add_argument("--log", action="append", choices=["tensorboard", "mlflow"],
                   help="also log to TensorBoard (RUN/tensorboard) or MLflow (repeatable; the `log` extra)")
    c.add_argument("--mlflow-uri", metavar="URI",
                   help="MLflow tracking URI (default: a file store in RUN/mlruns)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--max-memory", type=_memory, metavar="SIZE",
                   help="refuse a run whose estimate exceeds SIZE, e.g. 8G (default: the machine's available memory)")



def _experiment_parsers(sub) -> None:
    """`gfdsl sweep`, `compare`, `explain` and `list`."""
    c = sub.add_parser("sweep", help="train a grid of settings and seeds of one spec, one run each")
    c.add_argument("spec", metavar="SPEC")
    c.add_argument("--set", action="append", metavar="NAME=V1,V2,...",
                   help="a dim or train setting and its values (repeatable: the grid is every combination)")
    c.add_argument("--seeds", default="0", help="seeds, e.g. 0-2 or 0,3,7 (default 0)")
    c.add_argument("-j", "--jobs", type=_pos_int, default=1, help="runs at a time (default 1)")
    c.add_argument("--out", metavar="DIR", help="the sweep folder (default runs/<spec name>-sweep)")
    for flag, kind in (("--steps", _pos_int), ("--batch", _pos_int), ("--eval-n", _pos_int), ("--eval-k", _pos_int),
                       ("--val", _val_fraction), ("--patience", _nonneg_int), ("--threads", _pos_int),
                       ("--device", str)):
        c.add_argument(flag, type=kind, help=f"passed to every run's `gfdsl run {flag}`")
    c.add_argument("--log", action="append", choices=["tensorboard", "mlflow"], help="passed to every run")

    c = sub.add_parser("compare", help="a table and a figure of finished runs (or sweep folders)")
    c.add_argument("runs", nargs="+", metavar="RUN")
    c.add_argument("-o", "--out", metavar="FILE.png",
                   help="the curves figure (default compare.png, or SWEEP/compare.png for one sweep)")

    c = sub.add_parser("explain", help="explain an error code, or a registry entry and its arguments")
    c.add_argument("code", metavar="CODE|NAME")

    c = sub.add_parser("list", help="list everything a spec can name, with where it comes from")
    c.add_argument("kind", nargs="?", choices=[*KINDS, "specs"],
                   help="one kind only; `specs`: the specs shipped with gfdsl (run one by name: `gfdsl run ddpm`)")
    c.add_argument("--args", action="store_true", help="each entry's arguments: type, default, description")


def _int_at_least(lo: int):
    """An argparse type: an integer >= lo (a usage error, exit 2, otherwise)."""

    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{v}' is not an integer") from None
        if n < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {n}")
        return n

    return parse


_pos_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _memory(v: str) -> int:
    from gfdsl.compile.cost import parse_memory

    try:
        return parse_memory(v)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"'{v}' is not a size: write e.g. 8G, 512M or a number of bytes") from None


def _float_from(lo: float, strict: bool):
    """An argparse type: a finite number > lo (strict) or >= lo."""
    def parse(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{v}' is not a number") from None
        if not ((x > lo if strict else x >= lo) and x < float("inf")):
            raise argparse.ArgumentTypeError(
                f"must be a {'positive' if strict else 'non-negative'} finite number, got {v}")
        return x
    return parse


_pos_float, _nonneg_float = _float_from(0.0, True), _float_from(0.0, False)


def _val_fraction(v: str) -> float:
    x = _pos_float(v)
    if x > 0.5:
        raise argparse.ArgumentTypeError(f"a share of the training set in (0, 0.5], got {v}")
    return x


def _version() -> str:
    from gfdsl import __version__

    return __version__


def cmd_check(a) -> int:
    from gfdsl.driver import check_file

    overrides = _overrides(a.set)
    failed = 0
    for path in a.specs:
        try:
            c = check_file(path, overrides)
        except GfdslError as e:
            print(e.render(), file=sys.stderr)
            failed += 1
            continue
        if not a.quiet:
            print(f"ok  {path}: {_summary(c.graph.graph, c.graph)}")
        if a.cost:
            from gfdsl.compile.cost import estimate

            batch = a.batch or c.graph.graph["train"]["batch"]
            print(f"resource estimate at batch {batch}:\n{estimate(c.graph, batch, 2000).table()}")
    if failed and len(a.specs) > 1:
        print(f"{failed} of {len(a.specs)} specs failed", file=sys.stderr)
    return 1 if failed else 0


def _summary(G: dict, g) -> str:
    """One line on what a checked model is: its states and steps, kernels, target."""
    learned = sum(1 for k in G["kernels"].values() if k["learned"])
    target = " and ".join(filter(None, [f"data {G['dataset']['entry']}()" if G["dataset"] else "",
                                         f"{G['reward']['form']} {G['reward']['entry']}()" if G["reward"] else ""]))
    if G["space"] is not None:
        sp = G["space"]
        what = (f"{sp['states']} states grown by {sp['n_moves']} actions + exit, "
                f"{learned} learned polic{'y' if learned == 1 else 'ies'}")
    else:
        steps = sum(1 for *_, d in g.edges(data=True) if d["kind"] == "step")
        what = f"{g.number_of_nodes()} states, {steps} steps, {len(G['kernels'])} kernels ({learned} learned)"
    given = f", given {', '.join(sorted(G['conditions']))}" if G.get("conditions") else ""
    return f"model {G['name']}, {what}; trained from {target}{given}"


def cmd_compile(a) -> int:
    from gfdsl.lang import ast as ast_mod
    from gfdsl import ir
    from gfdsl.driver import check_file
    from gfdsl.lang.parse import parse
    from gfdsl.files import atomic_write
    from gfdsl.files import read_source

    if a.dump == "ast":
        text = ast_mod.dump(parse(read_source(a.spec)))
    else:
        text = ir.dump(check_file(a.spec, _overrides(a.set)).graph)
    if a.out:
        atomic_write(a.out, text.encode("utf-8"))
    else:
        sys.stdout.write(text)
    return 0


def cmd_render(a) -> int:
    from gfdsl.ir import render
    from gfdsl.driver import check_file

    if a.unroll < 1:
        raise _Usage("gfdsl: error: --unroll must be at least 1")
    c = check_file(a.spec, _overrides(a.set))
    render.write(c.graph, a.out, a.unroll)
    print(f"wrote {a.out}")
    return 0


def cmd_fmt(a) -> int:
    from gfdsl.lang.fmt import format_source
    from gfdsl.files import atomic_write
    from gfdsl.files import read_source

    status = 0
    for path in a.specs:
        try:
            src = read_source(path)
            out = format_source(src)
        except GfdslError as e:
            sys.stdout.flush()  # each file's output in order, whichever stream it goes to
            print(e.render(), file=sys.stderr, flush=True)
            status = 1
            continue
        if a.check:
            if out != src.text:
                print(f"{path}: not in canonical form (run `gfdsl fmt --write {path}`)", file=sys.stderr, flush=True)
                status = 1
        elif a.write:
            if out != src.text:
                atomic_write(path, out.encode("utf-8"))
                print(f"formatted {path}")
        else:
            sys.stdout.write(out)
            sys.stdout.flush()
    return status


def cmd_run(a) -> int:
    from gfdsl.engine.loop import RunOptions, train

    if bool(a.spec) == bool(a.resume):
        raise _Usage("gfdsl: error: give either SPEC or --resume RUN")
    if a.resume and (a.set or a.steps or a.batch or a.lr or a.seed is not None or a.out or a.compile or a.amp
                     or a.prior or a.prior_steps is not None or a.val is not None or a.patience is not None):
        raise _Usage("gfdsl: error: --resume continues a run as it was started; --set, --steps, --batch, --lr, "
                     "--seed, --out, --compile, --amp, --prior, --prior-steps, --val and --patience cannot change it")
    if a.nproc > 1 and not os.environ.get("WORLD_SIZE"):
        from gfdsl.engine.distributed import launch

        argv = list(sys.argv[1:]) if a.argv is None else list(a.argv)
        i = argv.index("--nproc") if "--nproc" in argv else None
        if i is not None:
            del argv[i:i + 2]
        else:
            argv = [x for x in argv if not x.startswith("--nproc=")]
        return launch(argv, a.nproc)
    opts = RunOptions(steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, device=a.device, threads=a.threads,
                      compile=a.compile, amp=a.amp, out=a.out, eval_k=a.eval_k, eval_n=a.eval_n, prior=a.prior,
                      prior_steps=a.prior_steps, max_memory=a.max_memory, val=a.val, patience=a.patience, samples=a.samples,
                      log=tuple(a.log or ()), mlflow_uri=a.mlflow_uri,
                      progress=not a.no_progress and sys.stderr.isatty())
    try:
        s = train(a.spec, opts, _overrides(a.set), resume=a.resume)
    except KeyboardInterrupt:
        out = a.resume or a.out or "runs/" + os.path.splitext(os.path.basename(a.spec))[0]
        print(f"gfdsl: interrupted; the last checkpoint is kept: continue with `gfdsl run --resume {out}`",
              file=sys.stderr)
        return 130
    if not s:  # a rank other than 0: rank 0 reports
        return 0
    out = a.resume or opts.out or "runs/" + os.path.splitext(os.path.basename(a.spec))[0]
    done = s["steps"] if s.get("steps_done", s["steps"]) == s["steps"] else f"{s['steps_done']} of {s['steps']}"
    print(f"{s['model']}: {done} steps in {s['train_seconds']:.1f} s ({s['steps_per_second']:.0f} steps/s); "
          + _result_line(s))
    more = "".join(f", {n}" for n in ("loss.png", "logz.png", "best.safetensors", "tensorboard", "mlruns")
                   if os.path.exists(os.path.join(out, n)))
    print(f"wrote {out}/" "{summary.json, metrics.jsonl, checkpoint.safetensors, samples.npy, samples.png" + more + "}")
    v = s.get("validation")
    if v and v.get("best_val_nll_nats") is not None:
        stop = f"; stopped early at step {v['stopped_early_at']}" if v["stopped_early_at"] else ""
        print(f"validation: best NLL {v['best_val_nll_nats']:.4f} nats at step {v['best_step']} "
              f"(evaluated: {s['evaluated']}){stop}")
    return 0


def _result_line(s: dict) -> str:
    """What a finished run reports: the figure its target allows."""
    if "exact_l1" in s:
        lz = "n/a (no log Z in this parametrisation)" if s["log_z_error"] is None else f"{s['log_z_error']:.4g}"
        return f"exact L1 {s['exact_l1']:.4g}, |log Z - true| {lz}"
    if "test_nll_nats" in s:
        from gfdsl.engine.evaluate import estimator_label

        est = estimator_label(s["nll_estimator"])
        bpd = f", {s['test_bpd']:.3f} bits/dim" if "test_bpd" in s else ""
        return f"test NLL {s['test_nll_nats']:.4f} nats ({est}, {s['n_eval']} points){bpd}"
    if "sliced_w2" in s:
        return f"sliced W2 to the test data {s['sliced_w2']:.4f} ({s['n_samples']} samples)"
    parts = [f"log Z-hat {s['log_z_elbo']:.3f} (ELBO), {s['log_z_iw']:.3f} (importance-weighted)"]
    if "delta_log_z" in s:
        parts.append(f"Delta log Z {s['delta_log_z']:.3f}, Delta log Z^RW {s['delta_log_z_rw']:.3f}")
    if "eubo" in s:
        parts.append(f"EUBO {s['eubo']:.3f}")
    if "w2" in s:
        parts.append(f"W2 {s['w2']:.3f}")
    if "modes" in s:
        m = s["modes"]
        parts.append(f"{m['covered']} of {len(m['counts'])} modes with a third of their share")
    if "distinct" in s:
        parts.append(f"{s['distinct']} distinct of {s['n_samples']} samples")
    return "; ".join(parts)


def cmd_sample(a) -> int:
    from gfdsl.engine.rundir import sample_run

    from gfdsl.runtime.conditions import label

    path, points = sample_run(a.run, a.n, a.out, a.device, a.seed, a.given, a.guidance, a.steps, a.eta)
    if points != [{}]:
        shown = ", ".join(label(p) for p in points[:12]) + (", ..." if len(points) > 12 else "")
        print(f"wrote {path}: ({len(points)}, {a.n}, ...) samples, a row per point: {shown}")
    else:
        print(f"wrote {path}")
    return 0


def cmd_eval(a) -> int:
    import json

    from gfdsl.engine.rundir import eval_run

    print(json.dumps(eval_run(a.run, a.k, a.n, a.device), indent=2))
    return 0


def cmd_explain(a) -> int:
    from gfdsl.library import REGISTRY

    code = a.code.upper()
    if code not in CATALOGUE:
        kind = REGISTRY.kind_of(a.code)
        if kind is not None:
            _print_entry(REGISTRY.get(kind, a.code), True)
            return 0
        print(f"gfdsl: '{a.code}' is neither an error code (E101..E8xx) nor a registry entry "
              "(`gfdsl list` shows them)", file=sys.stderr)
        return 2
    msg, hint = CATALOGUE[code]
    print(f"{code}: {msg.replace('{', '<').replace('}', '>')}")
    if hint == "{hint}":
        print("  hint: (specific to each case)")
    elif hint:
        print(f"  hint: {hint.replace('{', '<').replace('}', '>')}")
    return 0


def cmd_list(a) -> int:
    from gfdsl.library import REGISTRY

    if a.kind == "specs":
        from gfdsl.files import shipped_specs

        for name, path in sorted(shipped_specs().items()):
            print(f"{name:24s} {path}")
        return 0
    for kind in [a.kind] if a.kind else KINDS:
        entries = REGISTRY.all(kind)
        if not entries:
            continue
        print(f"{kind}:")
        for e in entries:
            _print_entry(e, a.args, indent="  ")
    loaded = ", ".join(REGISTRY.sources()) or "none"
    print(f"plugins loaded: {loaded}")
    return 0


def _print_entry(e, with_args: bool, indent: str = "") -> None:
    from gfdsl.plugins import describe

    src = "" if e.source == "gfdsl" else f"  [plugin {e.source}]"
    print(f"{indent}{e.name} ({e.kind}){src}: {e.doc}")
    if with_args:
        for name, t, default, what in describe(e):
            print(f"{indent}    {name}: {t} = {default}" + (f"  -- {what}" if what else ""))


COMMANDS = {"check": cmd_check, "compile": cmd_compile, "render": cmd_render, "fmt": cmd_fmt,
            "run": cmd_run, "sample": cmd_sample, "eval": cmd_eval, "explain": cmd_explain, "list": cmd_list,
            "sweep": lambda a: _experiments().cmd_sweep(a), "compare": lambda a: _experiments().cmd_compare(a)}


def _experiments():
    from gfdsl.cli import experiments

    return experiments


# what `gfdsl[torch]` installs that the commands below import (module names)
TORCH_EXTRA = ("torch", "numpy", "safetensors", "matplotlib", "sklearn")
TORCH_COMMANDS = ("run", "sample", "eval", "sweep", "compare")


def _needs_torch(cmd: str) -> None:
    import importlib.util

    for m in TORCH_EXTRA[:4]:
        if importlib.util.find_spec(m) is None:
            raise ModuleNotFoundError(m, name=m)


def _torch_message(cmd: str, missing: str) -> str:
    return (f"gfdsl {cmd}: this needs gfdsl[torch]: pip install 'gfdsl[torch]' (missing: {missing})\n"
            "  on a CPU-only machine, `pip install torch==2.13.0` first keeps pip from fetching a CUDA build; "
            "check, render, fmt and compile work without it")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.cmd in TORCH_COMMANDS:
            _needs_torch(args.cmd)
        from gfdsl import plugins

        plugins.load(getattr(args, "plugin", None))
        return COMMANDS[args.cmd](args)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TORCH_EXTRA:
            raise
        print(_torch_message(args.cmd, e.name), file=sys.stderr)
        return 1
    except GfdslError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except _Usage as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gfdsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in gfdsl, not in the user's spec -- or in a plugin's code
        if os.environ.get("GFDSL_DEBUG"):
            raise
        from gfdsl.plugins import blame

        who = blame(e.__traceback__)
        if who is not None:
            print(f"gfdsl: error[E710]: plugin '{who[0]}' raised {type(e).__name__}: {e}\n  at {who[1]}; "
                  "set GFDSL_DEBUG=1 to see the traceback", file=sys.stderr)
            return 1
        print(f"gfdsl: internal error (a bug in gfdsl, not in your input): {type(e).__name__}: {e}\n"
              "  set GFDSL_DEBUG=1 to see the traceback, and please report it", file=sys.stderr)
        return 3


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
