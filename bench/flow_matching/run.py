"""gfdsl's flow matching (specs/flow_matching.gfn) against TorchCFM 1.0.7, side by side.

Both train by conditional flow matching with the exact minibatch OT coupling and
sigma = 0 on the same batches of the spec's moons training set (Adam at the spec's lr
and batch, one CPU thread, bare loops), each with its own model: gfdsl's mlp of the spec
(3 hidden SiLU layers of 64, a 32-wide sinusoidal time embedding) and TorchCFM's tutorial
MLP (3 hidden SELU layers of 64, t as an input). Then both are scored on the same 2000
test points by one estimator: the ODE back from the data with RK4 over the spec's T
steps, log p(x) by the instantaneous change of variables with the exact divergence.
Prints iterations/s of each, their ratio, and the test NLL of each at equal iterations.

TorchCFM runs in bench/flow_matching/.venv, made on first use (the CPU build of torch
first, then torchcfm 1.0.7 and its dependencies):

    python bench/flow_matching/run.py [--iters 1000 --seeds 0 1 2 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
VENV = HERE / ".venv"
CFM_PIN = "torchcfm==1.0.7"

from common import peer_python  # noqa: E402
from gfdsl.compile.lower import lower  # noqa: E402
from gfdsl.driver import check_file  # noqa: E402
from gfdsl.engine.rundir import load_data  # noqa: E402


def torchcfm_python(explicit: str | None) -> str:
    """A Python that imports torchcfm: the one given, else bench/flow_matching/.venv."""
    return peer_python(VENV, "torchcfm", CFM_PIN, explicit)


def gfdsl_side(c, train: torch.Tensor, test: torch.Tensor, iters: int, seed: int) -> dict:
    s = c.graph.graph["train"]
    torch.manual_seed(seed)
    m = lower(c.graph, c.source)
    opt = torch.optim.Adam(m.parameters(), lr=s["lr"])
    g = torch.Generator().manual_seed(seed)  # the same batch indices as the TorchCFM side
    idx = [torch.randint(0, train.shape[0], (s["batch"],), generator=g) for _ in range(iters)]
    t0 = time.perf_counter()
    for j in range(iters):
        loss, _ = m.loss(train[idx[j]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    secs = time.perf_counter() - t0
    nll = float(-m.log_likelihood(test).mean())
    return {"iters_per_second": iters / secs, "seconds": secs, "test_nll_nats": nll,
            "parameters": sum(p.numel() for p in m.parameters())}


def cfm_side(py: str, train_f: Path, test_f: Path, c, iters: int, seed: int) -> dict:
    s = c.graph.graph["train"]
    T = len([e for e in c.graph.edges(data=True) if e[2]["kind"] == "step"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([py, str(HERE / "cfm_side.py"), "--train", str(train_f), "--test", str(test_f),
                        "--iters", str(iters), "--batch", str(s["batch"]), "--lr", str(s["lr"]),
                        "--steps", str(T), "--seed", str(seed)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"TorchCFM side failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--python", help="a Python with torchcfm installed (default: bench/flow_matching/.venv)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    py = torchcfm_python(a.python)
    c = check_file(ROOT / "specs" / "flow_matching.gfn")
    train, test, _ = load_data(c)
    test = test[:2000]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        train_f, test_f = Path(d) / "train.npy", Path(d) / "test.npy"
        np.save(train_f, train.numpy())
        np.save(test_f, test.numpy())
        for seed in a.seeds:
            row = {"seed": seed, "gfdsl": gfdsl_side(c, train, test, a.iters, seed),
                   "torchcfm": cfm_side(py, train_f, test_f, c, a.iters, seed)}
            row["ratio"] = row["gfdsl"]["iters_per_second"] / row["torchcfm"]["iters_per_second"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    tc = rows[0]["torchcfm"]
    print(f"conditional flow matching (exact OT, sigma 0) on moons, {a.iters} iterations, batch "
          f"{c.graph.graph['train']['batch']}, 1 thread, torch {tc['torch']}, torchcfm {tc['torchcfm']}; "
          f"NLL by RK4 over the spec's steps, exact divergence, 2000 test points")
    for k in ("gfdsl", "torchcfm"):
        it = [r[k]["iters_per_second"] for r in rows]
        nll = [r[k]["test_nll_nats"] for r in rows]
        print(f"  {k:8s} {statistics.mean(it):7.1f} it/s  test NLL {statistics.mean(nll):.3f} "
              f"(+- {statistics.pstdev(nll):.3f}) nats  ({rows[0][k]['parameters']:,} parameters)")
    ratios = [r["ratio"] for r in rows]
    print(f"  ratio gfdsl / torchcfm = {statistics.mean(ratios):.2f} it/s (per seed "
          + ", ".join(f"{x:.2f}" for x in ratios) + ")")
    if a.json:
        Path(a.json).write_text(json.dumps({"iters": a.iters, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
