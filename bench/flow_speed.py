"""Speed of the compiled RealNVP (specs/realnvp.gfn) against zuko's RealNVP of the same
size, training with exact maximum likelihood on 8gaussians, one thread, same process,
alternating blocks. Prints steps/s of each and the ratio (goal >= 1.0).

    python bench/flow_speed.py [--blocks 10 --steps-per-block 100]

zuko is a benchmark-only dependency: `pip install zuko` (or `pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import alternate, median, peer  # noqa: E402


def gfdsl_flow():
    from gfdsl.driver import check_file
    from gfdsl.compile.lower import lower

    torch.manual_seed(0)
    c = check_file(ROOT / "specs" / "realnvp.gfn")
    m = lower(c.graph, c.source)
    return m, lambda x: m.loss(x)[0]


def zuko_flow(layers: int, hidden: int):
    import zuko

    torch.manual_seed(0)
    f = zuko.flows.RealNVP(features=2, transforms=layers, hidden_features=(hidden, hidden))
    return f, lambda x: -f().log_prob(x).mean()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--steps-per-block", type=int, default=100)
    ap.add_argument("--batch", type=int, default=512)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if peer("zuko") is None:
        return 1
    from gfdsl.runtime.data import toy2d

    data = torch.tensor(toy2d("8gaussians", 50_000, np.random.default_rng(0)), dtype=torch.float32)
    g, gl = gfdsl_flow()
    K = len(g.space.plan.steps)
    z, zl = zuko_flow(K, 128)
    models = {"zuko": (z, zl), "gfdsl": (g, gl)}
    runs = {k: (f, torch.optim.Adam(m.parameters(), lr=1e-3)) for k, (m, f) in models.items()}
    speeds = alternate(runs, data, a.blocks, a.steps_per_block, a.batch)
    med = {k: median(v) for k, v in speeds.items()}
    n = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()}
    print(f"RealNVP, {K} coupling layers, hidden (128, 128), batch {a.batch}, 1 thread, torch {torch.__version__}")
    for k in runs:
        print(f"  {k:6s} {med[k]:8.1f} steps/s  ({n[k]:,} parameters)")
    print(f"  ratio gfdsl / zuko = {med['gfdsl'] / med['zuko']:.3f}  (goal >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
