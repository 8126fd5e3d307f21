"""`gfdsl sweep` and `gfdsl compare`: a grid of runs of one spec, and a table and figure
of finished runs.

  gfdsl sweep SPEC --set lr=1e-3,3e-4 --set batch=128,256 --seeds 0-2 [-j N] [--out DIR]
      every combination of the comma-separated values, for every seed: one `gfdsl run`
      each, in its own process (one at a time unless -j N), into DIR/<setting=value,...,seed=S>;
      a run already finished there is kept, not redone (so a sweep that was stopped
      resumes by running it again); DIR/sweep.json lists the grid and each run's state.
      Other `run` flags (--steps, --batch, --eval-n, ...) pass through to every run.
  gfdsl compare RUN... [-o FILE.png]
      one row per run (a sweep folder stands for its runs): its settings and figures;
      the loss and metric curves of all of them in one figure.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gfdsl.errors import GfdslError, diag


def split_values(text: str) -> list[str]:
    """'1e-3,3e-4' -> ['1e-3', '3e-4']; commas inside [...] belong to a list value."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def parse_seeds(text: str) -> list[int]:
    """'0-2' -> [0, 1, 2]; '0,5,7' -> [0, 5, 7]."""
    seeds = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError:
        raise _bad("--seeds", f"'{text}' is not a list of seeds", "write e.g. --seeds 0-2 or --seeds 0,3,7") from None
    if not seeds or min(seeds) < 0 or len(seeds) > 1000:
        raise _bad("--seeds", f"'{text}' gives {len(seeds)} seeds", "give between 1 and 1000 non-negative seeds")
    return sorted(set(seeds))


def _bad(flag: str, why: str, hint: str) -> GfdslError:
    return GfdslError([diag("E709", None, None, path=flag, flag=flag, why=why, hint=hint)])


def grid(sets: list[str] | None, seeds: list[int]) -> list[dict]:
    """Every combination: [{'lr': '1e-3', 'seed': 0}, ...] (values as text, as --set takes them)."""
    axes = []
    for item in sets or []:
        name, eq, values = item.partition("=")
        if not eq or not name.strip().isidentifier() or not split_values(values):
            raise _bad("--set", f"'{item}' is not NAME=V1,V2,...", "write e.g. --set lr=1e-3,3e-4")
        axes.append([(name.strip(), v) for v in split_values(values)])
    points = [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]
    out = [{**p, "seed": s} for p in points for s in seeds]
    if len(out) > 10_000:
        raise _bad("--set", f"the grid has {len(out)} runs", "sweep at most 10,000 runs at once")
    return out


def run_name(point: dict) -> str:
    safe = lambda v: "".join(c if c.isalnum() or c in ".-+" else "_" for c in str(v))  # noqa: E731
    return ",".join(f"{k}={safe(v)}" for k, v in point.items())


PASS = ("steps", "batch", "eval_n", "eval_k", "val", "patience", "threads", "device")  # `run` flags a sweep passes on


def cmd_sweep(a) -> int:
    from gfdsl.cli.values import parse_value
    from gfdsl.driver import check_file

    passthrough = [f"--{k.replace('_', '-')}={getattr(a, k)}" for k in PASS if getattr(a, k) is not None]
    passthrough += [f"--log={t}" for t in a.log or ()]
    points = grid(a.set, parse_seeds(a.seeds))
    out = Path(a.out or f"runs/{Path(a.spec).stem}-sweep")
    for p in points:  # every point checked before any run starts: a bad value fails the sweep at once
        check_file(a.spec, {k: parse_value(v) for k, v in p.items() if k != "seed"})
    out.mkdir(parents=True, exist_ok=True)
    state = {run_name(p): {"settings": p, "status": "pending"} for p in points}
    _write_state(out, a.spec, state)

    def one(p: dict) -> tuple[str, int]:
        name = run_name(p)
        folder = out / name
        if (folder / "summary.json").is_file():
            return name, 0  # finished by an earlier sweep
        cmd = [sys.executable, "-m", "gfdsl", "run", a.spec, "--out", str(folder), "--seed", str(p["seed"]),
               "--no-progress", *[f"--set={k}={v}" for k, v in p.items() if k != "seed"], *passthrough,
               *[f"--plugin={m}" for m in a.plugin or ()]]
        if folder.exists() and (folder / "checkpoint.safetensors").is_file():
            cmd = [sys.executable, "-m", "gfdsl", "run", "--resume", str(folder), "--no-progress"]
        with open(out / f"{name}.log", "wb") as log:
            return name, subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode

    t0 = time.perf_counter()
    failed = 0
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for name, rc in pool.map(one, points):
            state[name]["status"] = "done" if rc == 0 else f"failed (exit {rc}; see {name}.log)"
            failed += rc != 0
            print(f"{'ok  ' if rc == 0 else 'FAIL'} {name}" + ("" if rc == 0 else f"  (exit {rc}, log: {out / name}.log)"),
                  flush=True)
            _write_state(out, a.spec, state)
    print(f"sweep: {len(points) - failed} of {len(points)} runs done in {time.perf_counter() - t0:.0f} s; {out}/sweep.json")
    done = [out / n for n, s in state.items() if s["status"] == "done"]
    if done:
        print(table(done))
    return 1 if failed else 0


def _write_state(out: Path, spec: str, state: dict) -> None:
    from gfdsl.files import atomic_write

    atomic_write(str(out / "sweep.json"), (json.dumps({"spec": spec, "runs": state}, indent=2) + "\n").encode())


# -- compare -------------------------------------------------------------------------------------

FIGURES = ("test_nll_nats", "test_bpd", "exact_l1", "log_z_error", "delta_log_z", "delta_log_z_rw", "w2",
           "sliced_w2", "mean_log_reward")


def expand(paths: list[str]) -> list[Path]:
    """Run folders; a sweep folder stands for its runs (sweep.json's order)."""
    out = []
    for p in map(Path, paths):
        if (p / "sweep.json").is_file():
            runs = json.loads((p / "sweep.json").read_text())["runs"]
            out += [p / n for n in runs if (p / n / "summary.json").is_file()]
        elif (p / "summary.json").is_file():
            out.append(p)
        else:
            raise GfdslError([diag("E803", None, None, path=str(p), why="it holds no summary.json (not a finished run)",
                                   hint="pass folders written by `gfdsl run` or `gfdsl sweep`")])
    return out


def table(runs: list[Path]) -> str:
    """A fixed-width table: run, the settings that differ between runs, steps, time, figures."""
    rows = [(r, json.loads((r / "summary.json").read_text()), json.loads((r / "run.json").read_text())) for r in runs]
    varying = [k for k in sorted({k for _, _, info in rows for k in (info.get("overrides") or {})})
               if len({json.dumps((info.get("overrides") or {}).get(k)) for _, _, info in rows}) > 1]
    figs = [f for f in FIGURES if any(f in s for _, s, _ in rows)]
    head = ["run", *varying, "seed", "steps", "seconds", *figs]
    if any(s.get("validation") for _, s, _ in rows):
        head.append("best_val_nll")
    body = []
    for r, s, info in rows:
        cells = [r.name, *[str((info.get("overrides") or {}).get(k, "")) for k in varying], str(s["seed"]),
                 str(s.get("steps_done", s["steps"])), f"{s['train_seconds']:.1f}"]
        cells += [f"{s[f]:.4g}" if isinstance(s.get(f), (int, float)) else "-" for f in figs]
        if "best_val_nll" in head:
            v = (s.get("validation") or {}).get("best_val_nll_nats")
            cells.append(f"{v:.4g}" if v is not None else "-")
        body.append(cells)
    width = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, width)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in width]), *map(line, body)])


def cmd_compare(a) -> int:
    from gfdsl.engine.curves import plot_curves
    from gfdsl.engine.rundir import metrics_records

    runs = expand(a.runs)
    if not runs:
        raise GfdslError([diag("E803", None, None, path=" ".join(a.runs), why="no finished runs there",
                               hint="wait for the sweep, or pass run folders")])
    print(table(runs))
    out = Path(a.out or (Path(a.runs[0]) / "compare.png" if len(a.runs) == 1 and
                         (Path(a.runs[0]) / "sweep.json").is_file() else "compare.png"))
    names = [r.name for r in runs]
    n = plot_curves([(nm, metrics_records(r / "metrics.jsonl")) for nm, r in zip(names, runs)], out,
                    f"{len(runs)} runs: training curves")
    print(f"wrote {out}" if n else "no curves: the runs logged no metrics")
    return 0


__all__ = ["cmd_sweep", "cmd_compare", "grid", "parse_seeds", "split_values", "table", "expand"]
