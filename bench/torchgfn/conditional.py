"""gfdsl vs torchgfn on the temperature-conditioned hypergrid, side by side in one run.

Both train one model of R(x)^beta, beta ~ U[0.5, 2] per trajectory, on the 2-D 8x8 grid
by trajectory balance with a conditional log Z(beta), batch 16, nets at lr 1e-3 and
log Z at 0.1, for the same number of iterations on one thread: gfdsl with
specs/hypergrid_cond.gfn, torchgfn 2.4.1 with its conditional estimators as its
train_conditional example builds them (tgfn_cond_side.py, in torchgfn's own venv). The
nets differ as each library's own example has them (gfdsl: 2 x 256 MLPs reading one-hot
states and 32 Fourier features of beta; torchgfn: a shared 256-wide trunk to 16
features joined with a 16-wide MLP of beta). Printed: iterations/second of each, their
ratio, and each trained P_F's exact L1 to R^beta / Z(beta) at beta = 0.5, 1, 2, computed
by gfdsl's exact evaluator for both.

    python bench/torchgfn/conditional.py [--iters 3000] [--seeds 0 1 2] [--json out.json]
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
sys.path.insert(0, str(HERE))

from run import torchgfn_python  # noqa: E402

BETAS = (0.5, 1.0, 2.0)


def model(seed: int):
    from gfdsl.compile.lower import lower
    from gfdsl.driver import check_file

    c = check_file(ROOT / "specs" / "hypergrid_cond.gfn")
    torch.manual_seed(seed)
    return lower(c.graph, c.source)


def run_gfdsl(iters: int, seed: int, batch: int = 16) -> dict:
    from gfdsl.engine.loop import init_log_z, make_optimizer
    from gfdsl.engine.module import param_groups

    m = model(seed)
    init_log_z(m, 0.0, batch)
    opt = make_optimizer(torch.optim.Adam, param_groups(m, 1e-3, 0.1), 1e-3, 0.0)  # as `gfdsl run` makes it
    empty = torch.zeros(batch, 0)
    t0 = time.perf_counter()
    for k in range(iters):
        with m.given(m.conditions.draw(batch, m.device)):
            loss, _ = m.loss(empty, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    l1 = {}
    for b in BETAS:
        with m.given(m.conditions.fixed({"beta": b})):
            l1[b] = m.exact_distribution()["exact_l1"]
    return {"it_per_s": iters / dt, "l1": l1}


def l1_of_logits(logits: np.ndarray) -> dict:
    """Exact L1 of P_F given as logits over every state, one table per beta."""
    from gfdsl.runtime.spaces import against_reward

    m = model(0)
    sp = m.space.space
    out = {}
    for b, table in zip(BETAS, torch.from_numpy(logits)):
        def log_pf(S, table=table):
            return torch.log_softmax(table[sp.index(S)].masked_fill(~sp.forward_mask(S), float("-inf")), 1)

        with m.given(m.conditions.fixed({"beta": b})):
            p_t, target, _ = against_reward(sp, log_pf, m.reward)
        out[b] = float((p_t - target).abs().sum())
    return out


def run_torchgfn(py: str, iters: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "logits.npy"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        r = subprocess.run([py, str(HERE / "tgfn_cond_side.py"), "--iters", str(iters), "--seed", str(seed),
                            "--out", str(out)], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"torchgfn side failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["l1"] = l1_of_logits(np.load(out))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--python", default=None, help="a Python with torchgfn installed")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    py = torchgfn_python(a.python)
    rows = []
    for seed in a.seeds:  # the libraries alternate, so drifts in load hit both
        t, g = run_torchgfn(py, a.iters, seed), run_gfdsl(a.iters, seed)
        rows.append({"seed": seed, "torchgfn": t, "gfdsl": g, "ratio": g["it_per_s"] / t["it_per_s"]})
        print(json.dumps(rows[-1]), flush=True)
    for lib in ("torchgfn", "gfdsl"):
        its = statistics.mean(r[lib]["it_per_s"] for r in rows)
        l1 = " ".join(f"beta={b:g}: {statistics.mean(r[lib]['l1'][b] for r in rows):.3f}"
                      f"+-{statistics.pstdev([r[lib]['l1'][b] for r in rows]):.3f}" for b in BETAS)
        print(f"{lib:>8}: {its:.1f} it/s; exact L1 {l1}")
    print(f"ratio gfdsl / torchgfn it/s: {statistics.mean(r['ratio'] for r in rows):.2f} "
          f"({min(r['ratio'] for r in rows):.2f}-{max(r['ratio'] for r in rows):.2f})")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
