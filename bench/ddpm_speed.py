"""Speed of the compiled DDPM against a plain hand-written PyTorch DDPM.

Both train the same model (MLP 2+128 -> 256 -> 256 -> 256 -> 2 with SiLU and a
sinusoidal step embedding, linear betas, T = 100, L_simple, Adam, batch 512) on the same
8gaussians data, in one process, on one thread. Blocks of steps alternate between the
two so machine noise hits both alike; the script prints steps/second of each (median
over blocks) and the ratio compiled / hand-written.

    python bench/ddpm_speed.py [--blocks 10 --steps-per-block 200 --threads 1]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import alternate, median  # noqa: E402


# -- the hand-written reference: no gfdsl code below this line until `compiled()` -------------


class Embed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        half = dim // 2
        self.register_buffer("f", torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half).float())

    def forward(self, t):
        a = t.float()[:, None] * self.f[None]
        return torch.cat([a.sin(), a.cos()], 1)


class HandDDPM(nn.Module):
    def __init__(self, T=100, D=2, H=256, E=128):
        super().__init__()
        self.T = T
        self.emb = Embed(E)
        self.net = nn.Sequential(nn.Linear(D + E, H), nn.SiLU(), nn.Linear(H, H), nn.SiLU(),
                                 nn.Linear(H, H), nn.SiLU(), nn.Linear(H, D))
        b = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        ab = torch.cumprod(1 - b, 0)
        self.register_buffer("sa", ab.sqrt().float())
        self.register_buffer("s1a", (1 - ab).sqrt().float())

    def loss(self, x0):
        t = torch.randint(0, self.T, (x0.shape[0],))
        eps = torch.randn_like(x0)
        xt = self.sa[t][:, None] * x0 + self.s1a[t][:, None] * eps
        pred = self.net(torch.cat([xt, self.emb(t + 1)], 1))
        return ((pred - eps) ** 2).mean()


def hand_written():
    torch.manual_seed(0)
    m = HandDDPM()
    return m, m.loss


def compiled():
    from gfdsl.driver import check_file
    from gfdsl.compile.lower import lower

    torch.manual_seed(0)
    c = check_file(ROOT / "specs" / "ddpm.gfn")
    m = lower(c.graph, c.source)
    return m, lambda x: m.loss(x)[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--steps-per-block", type=int, default=200)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from gfdsl.runtime.data import toy2d
    import numpy as np

    data = torch.tensor(toy2d("8gaussians", 50_000, np.random.default_rng(0)), dtype=torch.float32)
    models = {"hand-written": hand_written(), "gfdsl": compiled()}
    n_h, n_g = (sum(p.numel() for p in m.parameters()) for m, _ in models.values())
    assert n_h == n_g, (n_h, n_g)
    runs = {k: (f, torch.optim.Adam(m.parameters(), lr=1e-3)) for k, (m, f) in models.items()}
    speeds = alternate(runs, data, a.blocks, a.steps_per_block, a.batch)
    med = {k: median(v) for k, v in speeds.items()}
    print(f"DDPM training step, batch {a.batch}, {n_g:,} parameters, {a.threads} thread(s), "
          f"{a.blocks} alternating blocks of {a.steps_per_block} steps, torch {torch.__version__}")
    for k, v in med.items():
        print(f"  {k:13s} {v:8.1f} steps/s  (min {min(speeds[k]):.1f}, max {max(speeds[k]):.1f})")
    print(f"  ratio gfdsl / hand-written = {med['gfdsl'] / med['hand-written']:.3f}  (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
