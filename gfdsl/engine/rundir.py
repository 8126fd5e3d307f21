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
  inputs/             copies of the files the spec names (data, reward tables) up to
                      16 MiB; run.json records the folder of the spec and each input's
                      SHA-256, so `eval` and `--resume` find them from any folder
Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gfdsl.driver import Compiled, check_file
from gfdsl.engine.checkpoint import BEST, CKPT, read_checkpoint, restore_model, spec_hash
from gfdsl.engine.ema import load_averages
from gfdsl.errors import GfdslError, diag
from gfdsl.files import COPY_INPUT_BYTES, Inputs, atomic_write, file_digest, folder_digest, umask


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
    max_memory: int | None = None  # bytes a run may take (default: the machine's available memory)
    on_checkpoint: object = None  # Python API: called as f(step, model) after each checkpoint
    val: float | None = None  # the train setting `val`: share of the training set held out
    patience: int | None = None  # the train setting `patience`: early stopping
    log: tuple[str, ...] = ()  # experiment trackers: "tensorboard", "mlflow" (gfdsl.engine.trackers)
    mlflow_uri: str | None = None  # MLflow tracking URI (default: a file store in the run folder)


# RunOptions field -> its flag: a flag obeys the bounds of the train setting it overrides
FLAGS = {"steps": "--steps", "batch": "--batch", "lr": "--lr", "eval_k": "--eval-k", "prior_steps": "--prior-steps"}


def check_flags(opts: RunOptions) -> None:
    """Refuse a flag outside its train setting's range (E709): `--lr 1e300` is refused as
    `lr = 1e300` in the spec is."""
    from pydantic import ValidationError

    from gfdsl.library.settings import TrainSettings

    for field, flag in FLAGS.items():
        v = getattr(opts, field)
        if v is None:
            continue
        try:
            TrainSettings.model_validate({field: v})
        except ValidationError as e:
            raise GfdslError([diag("E709", None, None, path=flag, flag=flag, why=f"{v}: {e.errors()[0]['msg'].lower()}",
                                   hint=f"`{field}` in the train block has the same bounds")]) from None


def check_cost(c: Compiled, batch: int, eval_n: int | None, eval_k: int | None, max_memory: int | None,
               device: torch.device | None = None, memory: bool = True) -> None:
    """Refuse, before anything is allocated or written, a run whose estimated memory
    exceeds the limit or whose evaluation would take hours (E807, with the estimate)."""
    from gfdsl.compile.cost import CPU_FLOPS, EVAL_FLOPS_LIMIT, available_memory, duration, estimate, human
    from gfdsl.lang.source import Span

    cost = estimate(c.graph, batch, eval_n, eval_k)
    limit, where = max_memory, "--max-memory"
    if memory and limit is None and device is not None and device.type == "cuda":
        limit, where = torch.cuda.mem_get_info(device)[0], "free on the GPU"
    elif memory and limit is None:
        limit, where = available_memory(), "available"
    if memory and limit is not None and cost.total > limit:
        big = sorted(cost.rows, key=lambda r: -r[1])[:2]
        span = cost.culprit()
        src, span = (c.source, Span(*span)) if span and c.source is not None else (None, None)
        raise GfdslError([diag("E807", src, span, path="estimate", what="this run", need=f"{human(cost.total)} of memory",
                               limit=f"{human(limit)} ({where})",
                               detail=", ".join(f"{k} {human(b)}" for k, b in big) + f"; {cost.parameters:,} parameters",
                               hint="make the model or the batch smaller; `gfdsl check --cost` prints the estimate, "
                                    "--max-memory sets the limit")])
    if cost.eval_flops > EVAL_FLOPS_LIMIT:
        raise GfdslError([diag("E807", None, None, path="estimate", what="the evaluation",
                               need=f"{cost.eval_flops:.2g} floating-point operations "
                                    f"(about {duration(cost.eval_flops / CPU_FLOPS)})",
                               limit=f"{EVAL_FLOPS_LIMIT:.0e} (about {duration(EVAL_FLOPS_LIMIT / CPU_FLOPS)})",
                               detail=cost.eval_what, hint="lower eval_k (or --eval-k) or --eval-n")])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GfdslError([diag("E805", None, None, path="--device", device=name, why="no CUDA device is visible")])
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise GfdslError([diag("E805", None, None, path="--device", device=name, why="expected auto, cpu or cuda")])
    return torch.device(name)


def json_bytes(obj) -> bytes:
    """How run.json and summary.json are written: indented, keys sorted, a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json(path: Path, obj) -> None:
    atomic_write(str(path), json_bytes(obj))


def npy_bytes(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, a, allow_pickle=False)
    return f.getvalue()


TRACKER_FILES = ("tensorboard", "mlruns", "mlflow_run_id")  # what --log writes before the first step


def _failed_start(out: Path) -> bool:
    """A run folder left by a start that failed before any work was kept: run.json and
    spec.gfn at most, its inputs, no checkpoint, no summary, no metric line."""
    names = {p.name for p in out.iterdir()}
    if not names or not names & {"run.json", "spec.gfn"} or not names <= {"run.json", "spec.gfn", "metrics.jsonl", "inputs",
                                                                        *TRACKER_FILES}:
        return False
    m = out / "metrics.jsonl"
    return not m.exists() or (m.is_file() and m.stat().st_size == 0)


def check_out(out: Path) -> bool:
    """Refuse an --out that cannot become a new run folder (a file, a folder holding
    files); True when it is a failed start that may be replaced."""
    if out.exists() and not out.is_dir():
        raise GfdslError([diag("E803", None, None, path=str(out), why="it is a file, not a folder",
                               hint="choose another --out")])
    if out.is_dir() and any(out.iterdir()):
        if not _failed_start(out):
            raise GfdslError([diag("E803", None, None, path=str(out), why="it already holds files",
                                   hint="choose another --out, or remove the folder")])
        return True
    return False


def start_dir(out: Path, files: dict[str, bytes]) -> None:
    """Create the run folder with its first files, atomically and exclusively: they are
    written into a fresh temporary folder beside it, which is then renamed into place.
    A full disk or a read-only parent leaves nothing behind; two runs racing for one
    --out cannot both win (the rename refuses a folder that is no longer empty). An
    existing empty folder is taken; one left by a failed start is replaced."""
    if check_out(out):
        shutil.rmtree(out)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.gfdsl-", dir=out.parent))
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp / rel, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o777 & ~umask())
        os.rename(tmp, out)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        why = "another run took it first" if e.errno in (errno.ENOTEMPTY, errno.EEXIST) else e.strerror or str(e)
        raise GfdslError([diag("E803", None, None, path=str(out), why=why,
                               hint="check that the parent folder is writable and the disk has room")]) from None


def read_run(out: Path) -> dict:
    try:
        info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GfdslError([diag("E803", None, None, path=str(out), why=f"its run.json cannot be read ({e})",
                               hint="pass a folder written by `gfdsl run`")]) from None
    from gfdsl import plugins

    plugins.load(info.get("plugin_modules") or [])  # the --plugin modules it was trained with
    return info


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


# -- the files a spec names ---------------------------------------------------------------------


def spec_inputs(G: dict) -> list[str]:
    """The relative paths of the files the IR names: a data file, a bridge's source data
    file, a reward table."""
    out = []
    for what, arg in (("dataset", "path"), ("dataset", "labels"), ("source_data", "path"), ("reward", "file")):
        e = G.get(what)
        if e is not None and e["entry"] in ("file", "table") and e["args"].get(arg):
            out.append(e["args"][arg])
    return out


def record_inputs(c: Compiled, inputs: Inputs) -> dict:
    """What run.json keeps of a new run's inputs: the spec's folder and each file's size
    and SHA-256. Resolving them here refuses a missing or bad path (E801) before the run
    folder is made."""
    files = {}
    for rel in spec_inputs(c.graph.graph):
        p = inputs.resolve(rel)
        size = p.stat().st_size
        files[rel] = {"bytes": size, "sha256": file_digest(p), "copied": size <= COPY_INPUT_BYTES}
    folders = {rel: {"sha256": folder_digest(inputs.resolve_dir(rel))} for rel in spec_folders(c.graph.graph)}
    return {"spec_dir": str(inputs.base), "inputs": files, "input_folders": folders}


def spec_folders(G: dict) -> list[str]:
    """The folders the IR names: an image data set's (read in place, never copied)."""
    e = G.get("dataset")
    return [e["args"]["folder"]] if e is not None and e["entry"] == "images" else []


def input_copies(record: dict, inputs: Inputs) -> dict[str, bytes]:
    """The small inputs' bytes, keyed by their place in the run folder (inputs/...)."""
    return {f"inputs/{rel}": inputs.resolve(rel).read_bytes() for rel, f in record["inputs"].items() if f["copied"]}


def run_inputs(out: Path, info: dict) -> Inputs:
    """Where a finished (or resumed) run finds its inputs: its own copies first, then the
    spec's folder recorded at the start; a file found there must still have the digest
    it had when the run began."""
    inputs = Inputs(Path(info.get("spec_dir") or out), copies=out / "inputs")
    for rel, f in (info.get("inputs") or {}).items():
        p = inputs.resolve(rel)
        if not p.is_relative_to(out / "inputs") and file_digest(p) != f["sha256"]:
            raise GfdslError([diag("E801", None, None, path=str(p),
                                   why="it changed since the run started (its SHA-256 differs from run.json's)")])
    for rel, f in (info.get("input_folders") or {}).items():
        p = inputs.resolve_dir(rel)
        if folder_digest(p) != f["sha256"]:
            raise GfdslError([diag("E801", None, None, path=str(p),
                                   why="its images changed since the run started (their SHA-256 differs from run.json's)")])
    return inputs


# -- data ----------------------------------------------------------------------------------------


def load_data(c: Compiled, inputs: Inputs | None = None):
    """(train, test, labels) of the data target; (B empty rows' template, None, None)
    without one: a model trained from a reward alone reads no data, so its batch only
    carries a size. labels: (train, test) of a labelled condition, 0-based (value - lo),
    or None."""
    from gfdsl.runtime.data import load_labelled

    g = c.graph
    if g.graph["dataset"] is None:
        return torch.zeros(1, 0), None, None
    ds = g.graph["dataset"]
    train, test, labels = load_labelled(ds, g.nodes[g.graph["data"]], inputs or Inputs.beside(c.source.path))
    _on_decoder_grid(c, train, test)
    cond = next(((n, cc) for n, cc in (g.graph.get("conditions") or {}).items() if cc["source"] == "labels"), None)
    if cond is None:
        return train, test, None
    name, cc = cond
    out = []
    for y in labels:
        bad = (y < cc["lo"]) | (y > cc["hi"])
        if bool(bad.any()):
            where = ds["args"].get("labels") or f"{ds['entry']}()"
            raise GfdslError([diag("E801", None, None, path=str(where),
                                   why=f"label {int(y[bad][0])} is outside condition {name}'s range "
                                       f"int({cc['lo']}, {cc['hi']})")])
        out.append(y - cc["lo"])
    return train, test, tuple(out)


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


def load_checked(run: Path) -> Compiled:
    """A run's spec.gfn, checked with the run's overrides (no torch work)."""
    if not (run / "spec.gfn").is_file():
        raise GfdslError([diag("E803", None, None, path=str(run), why="it holds no spec.gfn",
                               hint="pass a folder written by `gfdsl run`")])
    info = read_run(run) if (run / "run.json").is_file() else {}
    # the files it names: the run's copies, else the spec's folder recorded at its start
    return check_file(run / "spec.gfn", info.get("overrides") or {}, inputs=run_inputs(run, info))


def load_model(run: Path, device: str = "cpu", c: Compiled | None = None):
    """Rebuild a run's model from its spec.gfn (checked here unless `c` is that check,
    load_checked's) and checkpoint, refusing a changed spec."""
    from gfdsl.compile.lower import lower

    ckpt = run / CKPT
    if not (run / "spec.gfn").is_file() or not ckpt.is_file():
        raise GfdslError([diag("E803", None, None, path=str(run), why=f"it holds no spec.gfn and {CKPT}",
                               hint="pass a folder written by `gfdsl run`")])
    info = read_run(run) if (run / "run.json").is_file() else {}
    c = c or load_checked(run)
    inputs = run_inputs(run, info)
    tensors, meta = read_checkpoint(ckpt)
    if meta.get("spec_hash") != spec_hash(c.source.text):
        raise GfdslError([diag("E803", None, None, path=str(run),
                               why=f"{CKPT} was written for a different spec.gfn (hash mismatch)",
                               hint="restore the spec.gfn the run was trained with")])
    model = lower(c.graph, c.source, inputs)
    restore_model(model, tensors)
    if (run / BEST).is_file():  # a run with a validation split samples and evaluates its best weights
        restore_model(model, read_checkpoint(run / BEST)[0])
    else:
        load_averages(model, tensors)  # a run trained with `ema` samples and evaluates with the averages
    return c, model.to(resolve_device(device)), int(meta.get("step", 0)), inputs


def load_prior(model, c: Compiled, run: str) -> None:
    """A posterior's frozen prior (and the posterior's start) from a data-trained run:
    the run's model must be this posterior's prior -- the same forward kernels, nets,
    schedules and data state -- and its checkpoint's nets are loaded."""
    path = Path(run) / CKPT
    if not path.is_file() or not (Path(run) / "spec.gfn").is_file():
        raise GfdslError([diag("E803", None, None, path=str(run), why=f"it holds no spec.gfn and {CKPT}",
                               hint="--prior takes the folder of a finished `gfdsl run` of the prior")])
    other = load_checked(Path(run)).graph.graph
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


def sample_run(run: str, n: int, out: str | None, device: str = "cpu", seed: int = 0,
               given: list[str] | None = None, guidance: float | None = None, steps: int | None = None,
               eta: float | None = None) -> tuple[str, list[dict]]:
    """Draw n samples of a run's model: (n, ...); a conditional model's at each point
    that `given` names (engine.given), (P, n, ...); a DDPM chain's in `steps` respaced
    steps, DDIM with `eta` (engine.fewstep). Returns the file and the points."""
    from gfdsl.engine.evaluate import draw_given, draw_samples
    from gfdsl.engine.given import check_few_steps, check_guidance, given_points

    c, model, _, _ = load_model(Path(run), device)
    points = given_points(model.conditions, given)
    check_guidance(model.conditions, guidance)
    check_few_steps(model, steps, eta)
    model.eval()
    torch.manual_seed(seed)
    samples = (draw_given(model, n, points, guidance, steps, eta) if model.conditions
               else draw_samples(model, n, None, steps, eta))
    path = out or str(Path(run) / f"samples_{n}.npy")
    atomic_write(path, npy_bytes(samples))
    return path, points


def eval_run(run: str, k: int | None, n: int | None, device: str = "cpu") -> dict:
    from gfdsl.engine.evaluate import evaluate

    c = load_checked(Path(run))
    s = c.graph.graph["train"]
    ds = c.graph.graph["dataset"] or {"args": {}}
    # hours of work are refused before the model is built
    check_cost(c, s["batch"], n or ds["args"].get("n_test") or 2000, k or s["eval_k"], None, memory=False)
    c, model, step, inputs = load_model(Path(run), device, c)
    model.eval()
    _, test_x, labels = load_data(c, inputs)
    ev = evaluate(model, test_x, k or s["eval_k"], n, s["seed"], None if labels is None else labels[1])
    ev["step"] = step
    return ev


def metrics_records(path) -> list[dict]:
    """The JSON records of a run's metrics.jsonl (a line cut short by a kill is skipped)."""
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def eval_points(path) -> list[dict]:
    """The `eval_every` records of a run's metrics.jsonl ({"step", "eval"} each)."""
    return [r for r in metrics_records(path) if isinstance(r.get("eval"), dict) and "step" in r]
