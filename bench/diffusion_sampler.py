"""gfdsl against torchgfn 2.4.1 on a diffusion sampler of the 25-Gaussian grid, side by side.

Both train the same model: T = 100 Euler-Maruyama steps from the origin, sigma^2 = 5,
the PIS drift net of width 64 (harmonics 64, two joint layers, GELU, zero output layer),
the pinned Brownian motion as P_B, on-policy trajectory balance, batch 300, Adam at
1e-3 and log Z at 0.1, one thread each. torchgfn runs in its own virtual environment
(bench/torchgfn/.venv, made on first use by bench/torchgfn/run.py) through
bench/diffusion/tgfn_side.py; the two alternate seed by seed. Both are scored by gfdsl's
metrics on 2000 samples: Delta log Z = log Z - mean(log w) (log Z = 0) and the squared
2-Wasserstein distance to 2000 exact samples (an exact assignment).

    python bench/diffusion_sampler.py --iters 500 --seeds 1 --md out.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "torchgfn"))

SPEC = """
model bench_gmm25 {
  dims { T = 100  D = 2  S = 2.2360679775 }
  state x[t in 0..T] : real[D]
  source x[0] = 0
  net f = pis(in = D, out = D, hidden = 64, harmonics = 64, layers = 2)
  step x[t - 1] -> x[t] for t in 1..T {
    forward  = controlled_sde(net = f, sigma = S)
    backward = brownian_bridge(sigma = S)
  }
  energy = gmm25()
  objective = tb
  train { batch = 300  lr = 1e-3  lr_logz = 0.1 }
}
"""


def gfdsl_side(iters: int, warmup: int, seed: int, n_eval: int) -> dict:
    from gfdsl.compile.lower import lower
    from gfdsl.driver import check_source
    from gfdsl.engine.module import param_groups

    torch.manual_seed(seed)
    c = check_source(SPEC)
    m = lower(c.graph, c.source)
    opt = torch.optim.Adam(param_groups(m, 1e-3, 0.1))
    x = torch.zeros(300, 0)

    def step(i: int) -> None:
        loss, _ = m.objective(m, x, i)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(iters):
        step(warmup + i)
    dt = time.perf_counter() - t0
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        t = m.sample(n_eval)
        from gfdsl.engine.evaluate import log_weights

        lw = log_weights(m, t)
    return {"lib": "gfdsl", "it_per_s": iters / dt, "seconds": dt, "log_z": float(m.log_Z.detach()),
            "params": sum(p.numel() for p in m.nets.parameters()), "x": t.terminal.numpy(), "log_w": lw.numpy()}


def torchgfn_side(py: str, iters: int, warmup: int, seed: int, n_eval: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.npz"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        r = subprocess.run([py, str(HERE / "diffusion" / "tgfn_side.py"), "--iters", str(iters), "--warmup",
                            str(warmup), "--seed", str(seed), "--n_eval", str(n_eval), "--out", str(out)],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"torchgfn side failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        z = np.load(out)
        res["x"], res["log_w"] = z["x"], z["log_w"]
    return res


def score(res: dict, seed: int) -> dict:
    from gfdsl.engine.evaluate import w2_squared
    from gfdsl.runtime.energies import gmm25

    g = gmm25({"variance": 0.3})
    torch.manual_seed(10_000 + seed)
    exact = g.sample(len(res["x"]))
    lw = torch.as_tensor(res["log_w"], dtype=torch.float64)
    return {"delta_log_z": float(-lw.mean()), "delta_log_z_rw": float(-(torch.logsumexp(lw, 0) - math.log(len(lw)))),
            "w2_squared": w2_squared(torch.as_tensor(res["x"]).float(), exact)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--n-eval", type=int, default=2000)
    p.add_argument("--torchgfn-python", default=None)
    p.add_argument("--md", default=None, help="also write the table as markdown here")
    a = p.parse_args()
    torch.set_num_threads(1)
    from run import TGFN_PIN, torchgfn_python  # bench/torchgfn/run.py

    py = torchgfn_python(a.torchgfn_python)
    rows = []
    for seed in range(a.seeds):
        for side in ("torchgfn", "gfdsl") if seed % 2 == 0 else ("gfdsl", "torchgfn"):
            res = (torchgfn_side(py, a.iters, a.warmup, seed, a.n_eval) if side == "torchgfn" else
                   gfdsl_side(a.iters, a.warmup, seed, a.n_eval))
            res.update(score(res, seed), seed=seed)
            print(json.dumps({k: v for k, v in res.items() if k not in ("x", "log_w")}), flush=True)
            rows.append(res)
    by = {lib: [r for r in rows if r["lib"] == lib] for lib in ("gfdsl", "torchgfn")}

    def mean(lib, key):
        return float(np.mean([r[key] for r in by[lib]]))

    ratio = mean("gfdsl", "it_per_s") / mean("torchgfn", "it_per_s")
    lines = [f"diffusion sampler, 25GMM, T = 100, batch 300, sigma^2 = 5, PIS net width 64, on-policy TB, "
             f"{a.iters} iterations (+{a.warmup} warm-up), {a.seeds} seed(s), 1 thread; torch {torch.__version__}, "
             f"{TGFN_PIN}", "",
             "| library | iterations/s | Delta log Z | Delta log Z^RW | W2^2 | parameters |", "|---|---|---|---|---|---|"]
    for lib in ("torchgfn", "gfdsl"):
        lines.append(f"| {lib} | {mean(lib, 'it_per_s'):.2f} | {mean(lib, 'delta_log_z'):.3f} | "
                     f"{mean(lib, 'delta_log_z_rw'):.3f} | {mean(lib, 'w2_squared'):.2f} | {by[lib][0]['params']} |")
    lines += ["", f"iterations/s ratio gfdsl / torchgfn: **{ratio:.2f}**"]
    print("\n".join(lines))
    if a.md:
        Path(a.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
