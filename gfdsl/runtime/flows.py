"""Bijective kernels: normalizing-flow layers as steps with Dirac P_F and P_B.

A flow layer f maps h[k - 1] to h[k]; the pair of Diracs contributes log|det J_f| to the
trajectory's log-weight, so each x has one trajectory and the likelihood is exact
(Zhang et al. 2022, sec. 3.5). Two conditioners share the elementwise maps:

  Coupling        the kept half conditions a map of the other half (Dinh et al. 2017)
  Autoregressive  coordinate d is conditioned on coordinates < d through a MADE
                  (Papamakarios et al. 2017): density evaluation (x -> z) is one pass,
                  generation (z -> x) is D passes

and the elementwise maps are the affine one and the monotone rational-quadratic spline
of Durkan et al. (2019), "Neural Spline Flows" (arXiv:1906.04032). LULinear maps by a
learned invertible matrix W = P L (U + diag(s)) held by an lu() net (Kingma & Dhariwal
2018, Glow): it mixes coordinates between couplings when D > 2.

Shapes: states (B, D); a conditioner's parameters (B, P, D), P per coordinate, laid out as
MADE's output (`out.view(B, P, D)`); log|det| (B,).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gfdsl.runtime.kernels import Kernel, _t
from gfdsl.runtime.nets import zero_output

MIN_BIN = 1e-3    # a bin's smallest width and height, as a fraction of the interval 2B
MIN_SLOPE = 1e-3  # the smallest derivative at a knot
# softplus(u + SLOPE_SHIFT) + MIN_SLOPE = 1 at u = 0: a zero net output is the identity
SLOPE_SHIFT = math.log(math.expm1(1 - MIN_SLOPE))


class Bijection(Kernel):
    """A deterministic invertible map; P_F and P_B are Diracs and the pair contributes
    log|det J| (Dinh et al. 2017)."""

    bijective = True
    deterministic = True

    def forward_map(self, x, i):  # -> (y, log|det dy/dx|)
        raise NotImplementedError

    def inverse_map(self, y, i):  # -> (x, log|det dx/dy|)
        raise NotImplementedError


# -- elementwise maps: (B, D) values and (B, P, D) parameters -> (B, D) values and log-slopes ------


def affine(x, p, inverse: bool):
    """x exp(s) + b, p[:, 0] = s (soft-clamped to [-3, 3]), p[:, 1] = b."""
    s, b = 3.0 * torch.tanh(p[:, 0] / 3.0), p[:, 1]
    if inverse:
        return (x - b) * (-s).exp(), -s
    return x * s.exp() + b, s


def _knots(u: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised bin sizes (B, D, K) -> knot positions (B, D, K + 1) from -bound to
    bound, and the bin sizes themselves, each at least MIN_BIN * 2 bound."""
    K = u.shape[-1]
    size = MIN_BIN + (1 - MIN_BIN * K) * torch.softmax(u, dim=-1)
    knots = F.pad(torch.cumsum(size, dim=-1), (1, 0)) * (2 * bound) - bound
    knots = torch.cat([torch.full_like(knots[..., :1], -bound), knots[..., 1:-1],
                       torch.full_like(knots[..., :1], bound)], dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def rq_spline(x, p, inverse: bool, bins: int, bound: float):
    """The monotone rational-quadratic spline of Durkan et al. (2019), eqs. 4-8, on
    [-bound, bound] with K = bins bins, the identity outside (the derivative at both
    ends is 1, so the tails join smoothly). p (B, 3K - 1, D): K unnormalised widths, K
    heights, K - 1 interior derivatives; all zero is the identity map."""
    p = p.transpose(1, 2)  # (B, D, 3K - 1)
    K = bins
    xs, ws = _knots(p[..., :K], bound)
    ys, hs = _knots(p[..., K:2 * K], bound)
    one = torch.ones_like(p[..., :1])
    slopes = torch.cat([one, MIN_SLOPE + F.softplus(p[..., 2 * K:] + SLOPE_SHIFT), one], dim=-1)  # (B, D, K + 1)
    inside = (x > -bound) & (x < bound)
    v = x.clamp(-bound, bound)
    knots = ys if inverse else xs
    k = (v[..., None] >= knots[..., 1:K]).sum(-1, keepdim=True)  # the bin: (B, D, 1) in 0..K-1

    def at(t):
        return t.gather(-1, k).squeeze(-1)

    x_k, w, y_k, h, d0, d1 = at(xs), at(ws), at(ys), at(hs), at(slopes), at(slopes[..., 1:])
    s = h / w
    if inverse:  # solve the quadratic a xi^2 + b xi + c = 0 for xi in [0, 1] (eqs. 6-8)
        dy = v - y_k
        c2 = d1 + d0 - 2 * s
        a = h * (s - d0) + dy * c2
        b = h * d0 - dy * c2
        c = -s * dy
        xi = (2 * c / (-b - (b * b - 4 * a * c).clamp_min(0).sqrt())).clamp(0, 1)
    else:
        xi = ((v - x_k) / w).clamp(0, 1)
    q = xi * (1 - xi)
    den = s + (d1 + d0 - 2 * s) * q
    out = x_k + xi * w if inverse else y_k + h * (s * xi * xi + d0 * q) / den
    log_slope = 2 * s.log() + (d1 * xi * xi + 2 * s * q + d0 * (1 - xi) ** 2).log() - 2 * den.log()
    if inverse:
        log_slope = -log_slope
    return torch.where(inside, out, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))


def spline(bins: int, bound: float):
    def f(x, p, inverse):
        return rq_spline(x, p, inverse, bins, bound)
    return f


# -- conditioners -----------------------------------------------------------------------------------


class Coupling(Bijection):
    """y = x on the kept half, y = tau(x; net(m * x)) on the other (Dinh et al. 2017);
    parity 0 keeps the first half fixed, parity 1 the second; the net starts at zero.
    tau: `affine` (RealNVP, affine_coupling) or `spline(bins, bound)` (NSF, spline_coupling)."""

    def __init__(self, net: nn.Module, parity: int, dim: int, tau=affine):
        super().__init__()
        self.net, self.D, self.tau = net, dim, tau
        m = torch.zeros(dim)
        half = dim // 2
        if parity == 0:
            m[:half] = 1
        else:
            m[half:] = 1
        self.register_buffer("m", m, persistent=False)
        self.register_buffer("free", 1 - m, persistent=False)  # the transformed half
        self.timed = getattr(net, "embed", None) is not None  # skip building t when unused
        zero_output(net)  # the identity map

    def _map(self, x, i, inverse: bool):
        p = self.net(x * self.m, _t(i) if self.timed else None).view(x.shape[0], -1, self.D)  # (B, P, D)
        y, log_slope = self.tau(x, p, inverse)
        # the kept half is the same in x and y, so either conditions the inverse too
        return torch.where(self.free.bool(), y, x), (log_slope * self.free).sum(1)

    def forward_map(self, x, i):
        return self._map(x, i, False)

    def inverse_map(self, y, i):
        return self._map(y, i, True)


class AffineCoupling(Coupling):
    """RealNVP coupling: y = m * x + (1 - m) * (x * exp(s) + b), (s, b) = net(m * x)."""


class Autoregressive(Bijection):
    """x_d = tau(z_d; MADE(x_{<d})_d) in generation direction (Papamakarios et al. 2017);
    order 1 reverses the variables (the same map conjugated by a flip, |det| = 1)."""

    def __init__(self, net: nn.Module, dim: int, reverse: bool = False, tau=None, zero_init: bool = False):
        super().__init__()
        self.net, self.D, self.reverse, self.tau = net, dim, reverse, tau
        if zero_init:
            zero_output(net)

    def _flip(self, x):
        return x.flip(1) if self.reverse else x

    def _params(self, x, i):
        return self.net(x, _t(i)).view(x.shape[0], -1, self.D)  # (B, P, D)

    def forward_map(self, z, i):
        z = self._flip(z)
        x = torch.zeros_like(z)
        for d in range(self.D):  # x_d reads x_{<d}, which the earlier passes fixed
            y, _ = self.tau(z, self._params(x, i), False)
            x = x.clone()
            x[:, d] = y[:, d]
        _, log_slope = self.tau(z, self._params(x, i), False)
        return self._flip(x), log_slope.sum(1)

    def inverse_map(self, x, i):
        x = self._flip(x)
        z, log_slope = self.tau(x, self._params(x, i), True)
        return self._flip(z), log_slope.sum(1)


def _maf_affine(z, p, inverse):
    # MAF's layout: p[:, 0] the shift mu, p[:, 1] the log-scale a
    return affine(z, p.flip(1), inverse)


class MAFAffine(Autoregressive):
    """Masked autoregressive affine map: x_d = z_d exp(a_d) + mu_d, (mu, a) = MADE(x_{<d})."""

    def __init__(self, net: nn.Module, dim: int, reverse: bool = False):
        super().__init__(net, dim, reverse, _maf_affine)


class LULinear(Bijection):
    """y = W x + b with W and b from an lu() net (runtime/nets.LU): log|det W| = sum(log_s)
    in O(D), the inverse by two triangular solves (Kingma & Dhariwal 2018, sec. 3.2)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward_map(self, x, i):
        return self.net(x), self.net.log_s.sum().expand(x.shape[0])

    def inverse_map(self, y, i):
        L, U = self.net.factors()
        r = (y - self.net.b) @ self.net.P  # rows of P^T (y - b)
        v = torch.linalg.solve_triangular(L, r.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(U, v, upper=True).T
        return x, (-self.net.log_s.sum()).expand(y.shape[0])
