"""Few-step sampling of a trained 8gaussians DDPM run: the full ancestral chain against
`gfdsl sample RUN --steps S` (strided ancestral) and `--steps S --eta 0` (DDIM).

For each sampler: sliced W2 of n samples to n fresh data points (the same data every
sampler is compared with), the share of samples nearest each of the 8 modes, and the
wall time. Usage:

  gfdsl run specs/ddpm.gfn --out runs/ddpm
  python bench/few_step.py runs/ddpm --steps 20 10 5 -n 5000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gfdsl.engine.evaluate import draw_samples, sliced_w2
from gfdsl.engine.rundir import load_model
from gfdsl.runtime.data import toy2d

S = 1 / np.sqrt(2)
MODES = 4 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (S, S), (S, -S), (-S, S), (-S, -S)]) / 1.414


def mode_shares(x: np.ndarray) -> list[float]:
    near = ((x[:, None, :] - MODES[None]) ** 2).sum(-1).argmin(1)
    return [float((near == k).mean()) for k in range(8)]


def measure(model, n: int, steps: int | None, eta: float | None, data: np.ndarray, seed: int) -> dict:
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    x = draw_samples(model, n, None, steps, eta)
    sec = time.perf_counter() - t0
    shares = mode_shares(x)
    return {"steps": steps, "eta": eta, "sliced_w2": sliced_w2(x, data), "seconds": sec,
            "min_mode_share": min(shares), "modes_covered": sum(s > 0.02 for s in shares)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, nargs="+", default=[20])
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    _, model, _, _ = load_model(__import__("pathlib").Path(a.run))
    model.eval()
    data = toy2d("8gaussians", a.n, np.random.default_rng(12345)).astype(np.float32)
    rows = [measure(model, a.n, None, None, data, a.seed)]
    for s in a.steps:
        rows.append(measure(model, a.n, s, None, data, a.seed))
        rows.append(measure(model, a.n, s, 0.0, data, a.seed))
    ref = np.random.default_rng(999)  # the floor: data against data
    floor = sliced_w2(toy2d("8gaussians", a.n, ref).astype(np.float32), data)
    full = rows[0]["sliced_w2"]
    print(f"data vs data sliced W2 {floor:.4f}")
    for r in rows:
        name = "full chain" if r["steps"] is None else f"{r['steps']} steps, " + (
            "DDIM eta 0" if r["eta"] == 0 else "strided ancestral")
        print(f"{name:32s} sliced W2 {r['sliced_w2']:.4f} ({r['sliced_w2'] / full:.2f}x the full chain), "
              f"modes {r['modes_covered']}/8 (min share {r['min_mode_share']:.3f}), {r['seconds']:.2f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"run": a.run, "n": a.n, "floor": floor, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
