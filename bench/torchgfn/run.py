"""gfdsl vs torchgfn: trajectory balance on the hypergrid, side by side in one script.

For 2-D 8x8 and 4-D 8^4 grids and batches of 16 and 64, both libraries train the same
model -- P_F and P_B separate MLPs with 2 hidden layers of 256 (ReLU), log Z at lr 0.1,
the nets at lr 1e-3, reward R0 = 0.1, R1 = 0.5, R2 = 2.0 -- for a fixed number of
iterations on one CPU thread, each in a bare loop (sample a batch, loss, backward, step).
The script prints iterations/second of each, their ratio, and the exact L1 distance
sum_x |P_T(x) - R(x)/Z| of each trained P_F, both computed by gfdsl's exact evaluator
(torchgfn's side hands over its P_F logits over every state). A last row checks the
accuracy target: TB on 8x8 for 250 iterations of batch 128.

torchgfn runs in its own virtual environment (it pins numpy < 2 and pulls its own
dependencies); the script makes it on first use, installing the CPU build of torch first:

    python bench/torchgfn/run.py                 # full: 1000 iterations per cell
    python bench/torchgfn/run.py --iters 200 --json out.json --md out.md
    python bench/torchgfn/run.py --python /path/to/env/bin/python   # an existing env
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = HERE / ".venv"
TGFN_PIN = "torchgfn==2.4.1"
sys.path.insert(0, str(HERE.parent))

from common import peer_python  # noqa: E402


def torchgfn_python(explicit: str | None) -> str:
    """A Python that imports torchgfn: the one given, else bench/torchgfn/.venv (made
    and filled on first use)."""
    return peer_python(VENV, "gfn", TGFN_PIN, explicit)


def run_torchgfn(py: str, ndim: int, batch: int, iters: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "logits.npy"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        r = subprocess.run([py, str(HERE / "tgfn_side.py"), "--ndim", str(ndim), "--height", "8", "--batch",
                            str(batch), "--iters", str(iters), "--seed", str(seed), "--out", str(out)],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"torchgfn side failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["logits"] = np.load(out)
    return res


def gfdsl_model(ndim: int, seed: int):
    from gfdsl.driver import check_file
    from gfdsl.compile.lower import lower

    c = check_file(ROOT / "specs" / "hypergrid.gfn", {"D": ndim, "H": 8})
    torch.manual_seed(seed)
    return lower(c.graph, c.source)


def run_gfdsl(ndim: int, batch: int, iters: int, seed: int, warmup: int = 20) -> dict:
    from gfdsl.engine.module import param_groups
    from gfdsl.engine.loop import make_optimizer

    m = gfdsl_model(ndim, seed)
    opt = make_optimizer(torch.optim.Adam, param_groups(m, 1e-3, 0.1), 1e-3, 0.0)  # as `gfdsl run` makes it
    empty = torch.zeros(batch, 0)

    def step(k: int) -> None:
        loss, _ = m.loss(empty, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for k in range(warmup):
        step(k)
    t0 = time.perf_counter()
    for k in range(iters):
        step(warmup + k)
    dt = time.perf_counter() - t0
    ev = m.exact_distribution()
    return {"lib": "gfdsl", "it_per_s": iters / dt, "seconds": dt, "exact_l1": ev["exact_l1"],
            "log_z": ev["log_z_model"], "log_z_true": ev["log_z_true"]}


def exact_l1_of_logits(ndim: int, logits: np.ndarray) -> float:
    """The exact L1 of a P_F given as logits over every state (gfdsl's state order)."""
    from gfdsl.runtime.spaces import against_reward

    m = gfdsl_model(ndim, 0)
    sp = m.space.space
    table = torch.from_numpy(logits)

    def log_pf(S):
        return torch.log_softmax(table[sp.index(S)].masked_fill(~sp.forward_mask(S), float("-inf")), 1)

    p_t, target, _ = against_reward(sp, log_pf, m.reward)
    return float((p_t - target).abs().sum())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=1000, help="timed iterations per cell (after 20 of warm-up)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell: it/s and exact L1 are averaged")
    p.add_argument("--python", default=None, help="a Python with torchgfn installed")
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    p.add_argument("--no-target", action="store_true", help="skip the 250 x 128 accuracy row")
    p.add_argument("--ndims", type=int, nargs="+", default=[2, 4], choices=[2, 4], help="grids to run")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="batch sizes to run")
    a = p.parse_args()
    torch.set_num_threads(1)
    py = torchgfn_python(a.python)
    rows = []
    print(f"{'grid':>6} {'batch':>5} {'iters':>5} | {'torchgfn it/s':>13} {'gfdsl it/s':>10} {'ratio (per seed)':>18} | "
          f"exact L1 torchgfn, gfdsl (mean+-std over {a.seeds} seeds)")
    cells = [(d, b, a.iters) for d in a.ndims for b in a.batches]
    if not a.no_target and 2 in a.ndims:
        cells.append((2, 128, 250))
    for ndim, batch, iters in cells:
        ts, gs = [], []
        for seed in range(a.seeds):  # alternate the libraries so drifts in load hit both
            t = run_torchgfn(py, ndim, batch, iters, seed)
            t["exact_l1"] = exact_l1_of_logits(ndim, t.pop("logits"))
            ts.append(t)
            gs.append(run_gfdsl(ndim, batch, iters, seed))
        row = {"grid": f"{ndim}-D 8^{ndim}", "ndim": ndim, "batch": batch, "iters": iters, "seeds": a.seeds,
               "torchgfn_it_s": _mean(ts, "it_per_s"), "gfdsl_it_s": _mean(gs, "it_per_s"),
               "torchgfn_l1": _mean(ts, "exact_l1"), "gfdsl_l1": _mean(gs, "exact_l1"),
               "torchgfn_l1_std": _std(ts, "exact_l1"), "gfdsl_l1_std": _std(gs, "exact_l1"),
               "torchgfn_runs": ts, "gfdsl_runs": gs}
        row["ratio"] = row["gfdsl_it_s"] / row["torchgfn_it_s"]
        # each seed's pair ran back to back: its ratio shows the spread a machine's load adds
        paired = [g["it_per_s"] / t["it_per_s"] for g, t in zip(gs, ts)]
        row["ratio_min"], row["ratio_max"] = min(paired), max(paired)
        rows.append(row)
        print(f"{ndim}-D {batch:>5} {iters:>5} | {row['torchgfn_it_s']:>13.1f} {row['gfdsl_it_s']:>10.1f} "
              f"{row['ratio']:>5.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | "
              f"{row['torchgfn_l1']:.4f}+-{row['torchgfn_l1_std']:.4f} "
              f"{row['gfdsl_l1']:.4f}+-{row['gfdsl_l1_std']:.4f}", flush=True)
    info = {"torch": torch.__version__, "threads": 1, "cpu": _cpu(), "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(info, indent=2) + "\n")
    if a.md:
        Path(a.md).write_text(markdown(rows, info))
    return 0


def _mean(runs: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in runs]))


def _std(runs: list[dict], key: str) -> float:
    return float(np.std([r[key] for r in runs]))


def markdown(rows: list[dict], info: dict) -> str:
    out = [f"Measured on {info['cpu']}, one thread, torch {info['torch']}, {TGFN_PIN}; means over "
           f"{rows[0]['seeds']} seeds (exact L1: mean +- std).", "",
           "| grid | batch | iterations | torchgfn it/s | gfdsl it/s | ratio | per seed | exact L1 torchgfn | exact L1 gfdsl |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['grid']} | {r['batch']} | {r['iters']} | {r['torchgfn_it_s']:.1f} | {r['gfdsl_it_s']:.1f} | "
                   f"{r['ratio']:.2f}x | {r['ratio_min']:.2f}-{r['ratio_max']:.2f}x | "
                   f"{r['torchgfn_l1']:.4f} +- {r['torchgfn_l1_std']:.4f} | "
                   f"{r['gfdsl_l1']:.4f} +- {r['gfdsl_l1_std']:.4f} |")
    return "\n".join(out) + "\n"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
