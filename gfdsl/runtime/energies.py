"""The benchmark energies of diffusion samplers (Sendera et al. 2024, arXiv 2402.05098,
section 5; Midgley et al. 2023 for manywell), each with what the metrics need: the exact
log Z and an exact sampler.

  gmm25     the 5 x 5 grid of Gaussians, a GaussianMixture with fixed means
  funnel    Neal's funnel (Neal 2003): x_0 ~ N(0, 9), x_i | x_0 ~ N(0, e^{x_0}), normalised
  manywell  dim / 2 independent double wells; log Z by 1-D quadrature, samples by
            rejection from a two-Gaussian envelope (exact: every accepted draw is a draw
            of the target, whatever the envelope)
"""

from __future__ import annotations

import math

import torch

from gfdsl.runtime.targets import GaussianMixture, Target

LOG_2PI = math.log(2 * math.pi)


def gmm25(args: dict) -> GaussianMixture:
    grid = [-10.0, -5.0, 0.0, 5.0, 10.0]
    means = [[a, b] for a in grid for b in grid]
    return GaussianMixture({"means": means, "scales": [math.sqrt(args["variance"])], "weights": None})


class Funnel(Target):
    """log R(x) = log N(x_0; 0, 9) + sum_{i >= 1} log N(x_i; 0, exp(x_0)) (B,), log Z = 0."""

    can_sample = True
    differentiable = True
    log_z = 0.0

    def __init__(self, args: dict):
        super().__init__()
        self.dim = int(args["dim"])
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # follows .to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, xs = x[:, 0], x[:, 1:]
        lp0 = -0.5 * x0 ** 2 / 9.0 - 0.5 * math.log(9.0) - 0.5 * LOG_2PI
        # log N(x_i; 0, e^{x0}) summed over the d - 1 coordinates
        lps = -0.5 * (xs ** 2).sum(1) * torch.exp(-x0) - 0.5 * (self.dim - 1) * (x0 + LOG_2PI)
        return lp0 + lps

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        x0 = 3.0 * torch.randn(n, 1, device=self.anchor.device)
        return torch.cat([x0, torch.exp(0.5 * x0) * torch.randn(n, self.dim - 1, device=x0.device)], 1)


def _well(x: torch.Tensor) -> torch.Tensor:
    """-E of the first coordinate of a pair: -(x^4 - 6 x^2 + 0.5 x)."""
    return -(x ** 4 - 6 * x ** 2 + 0.5 * x)


def well_log_z(lo: float = -8.0, hi: float = 8.0, n: int = 200_001) -> float:
    """log of int exp(-x^4 + 6 x^2 - 0.5 x) dx by Simpson's rule on [lo, hi] (float64):
    the integrand is below e^{-3000} outside, and the rule's error is far below float32's."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    f = _well(x)
    m = f.max()
    w = torch.ones(n, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return float(m + torch.log((w * torch.exp(f - m)).sum() * (hi - lo) / (n - 1) / 3))


class Manywell(Target):
    """log R(x) = -sum_pairs (x1^4 - 6 x1^2 + 0.5 x1 + 0.5 x2^2) (B,), unnormalised:
    log Z = dim / 2 * (log Z_1 + log sqrt(2 pi)), Z_1 the well's integral."""

    can_sample = True
    differentiable = True
    # the envelope of the well's rejection sampler: an equal mixture of N(+-MU, SD^2)
    MU, SD = 1.7, 0.55

    def __init__(self, args: dict):
        super().__init__()
        self.dim = int(args["dim"])
        self.log_z1 = well_log_z()
        self.log_z = self.dim / 2 * (self.log_z1 + 0.5 * LOG_2PI)
        self.register_buffer("anchor", torch.zeros(()), persistent=False)
        # log of the bound M with p(x) / Z_1 <= M q(x): p / q peaks inside [-4, 4], where
        # the grid of 80,001 points finds it to 1e-6 relative; 5% margin on top
        x = torch.linspace(-6, 6, 80_001, dtype=torch.float64)
        self.log_m = float((_well(x) - self.log_z1 - self._log_q(x)).max()) + math.log(1.05)

    @classmethod
    def _log_q(cls, x: torch.Tensor) -> torch.Tensor:
        z = torch.stack([(x - cls.MU) / cls.SD, (x + cls.MU) / cls.SD])
        return torch.logsumexp(-0.5 * z ** 2, 0) - math.log(2 * cls.SD) - 0.5 * LOG_2PI

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, 0::2], x[:, 1::2]
        return (_well(x1) - 0.5 * x2 ** 2).sum(1)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        dev = self.anchor.device
        k = self.dim // 2
        return torch.stack([self._sample_well(n * k).view(n, k).to(dev),
                            torch.randn(n, k, device=dev)], 2).reshape(n, self.dim)

    def _sample_well(self, m: int) -> torch.Tensor:
        """m draws of p(x) proportional to exp(-x^4 + 6 x^2 - 0.5 x), by rejection (float64)."""
        out, have = [], 0
        while have < m:
            q = (torch.randn(2 * m, dtype=torch.float64) * self.SD
                 + self.MU * (2 * torch.randint(0, 2, (2 * m,)) - 1).double())
            keep = torch.rand(2 * m, dtype=torch.float64).log() < _well(q) - self.log_z1 - self._log_q(q) - self.log_m
            out.append(q[keep])
            have += int(keep.sum())
        return torch.cat(out)[:m].float()
