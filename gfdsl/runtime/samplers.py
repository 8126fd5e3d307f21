"""Kernels of diffusion samplers: a controlled SDE forward and the pinned Brownian motion
backward, on the time grid t_k = k / T of a chain x_0 -> x_1 -> ... -> x_T from a
point source x_0 = 0 (Zhang & Chen 2022, PIS; Sendera et al. 2024, arXiv 2402.05098):

  P_F(x_{k+1} | x_k) = N(x_k + f(x_k, t_k) dt, sigma^2 dt I),     dt = 1 / T
  f = net(x, t)                         (plain)
  f = net(x, t)[:D] + net(x, t)[D:] * clip(grad log R(x))   (Langevin parametrisation)
  P_B(x_k | x_{k+1}) = N(x_{k+1} t_k / t_{k+1}, sigma^2 dt t_k / t_{k+1} I)

P_B is the Brownian motion of diffusion coefficient sigma conditioned on its end point;
at k = 0 it is the point mass at the source (t_0 = 0), log P_B = 0. With a zero drift
(the net's last layer starts at zero) P_F is that Brownian motion: x_T ~ N(0, sigma^2 I).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution

from gfdsl.runtime.kernels import DiagNormal, Kernel, _in, _t, diag_normal
from gfdsl.runtime.nets import zero_output

LOG_2PI = math.log(2 * math.pi)


class ControlledSDE(Kernel):
    """Euler-Maruyama step of dx = f(x, t) dt + sigma dW; with `grad_log_r` set (lowering
    hands the target's gradient to Langevin-parametrised kernels) the net's second half
    scales the clipped score."""

    CLIP = 100.0  # grad log R is clipped to [-CLIP, CLIP] per coordinate (PIS, Sendera et al.)

    def __init__(self, net: nn.Module, sigma: float, n_steps: int, langevin: bool, dim: int,
                 learned_variance: bool = False):
        super().__init__()
        self.net, self.sigma, self.dt, self.langevin, self.dim = net, sigma, 1.0 / n_steps, langevin, dim
        self.learned_variance = learned_variance
        self.grad_log_r = None  # set by lowering when langevin: x (B, D) -> grad log R(x) (B, D)
        _start_at_zero(net, n_steps)  # the drift starts at zero: P_F starts as Brownian motion

    LOG_VAR_RANGE = 4.0  # a learned variance factor lies in [e^-4, e^4]

    def drift(self, x, i, ctx=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The drift f (B, D) and, with a learned variance, the log-variance factor (B, D)."""
        out = self.net(_in(x, ctx), _t(i))
        D = self.dim
        f = out[:, :D]
        if self.langevin:
            g = torch.nan_to_num(self.grad_log_r(x.detach())).clamp(-self.CLIP, self.CLIP)
            f = f + out[:, D:2 * D] * g
        lv = None
        if self.learned_variance:
            lv = self.LOG_VAR_RANGE * torch.tanh(out[:, -D:])
        return f, lv

    def dist(self, x, i, ctx=None) -> Distribution:
        f, lv = self.drift(x, i, ctx)
        mu = x + f * self.dt
        std = self.sigma * math.sqrt(self.dt)
        return diag_normal(mu, std if lv is None else std * torch.exp(0.5 * lv))

    def exploration_scale(self, explore: float, i: torch.Tensor):
        return explore * math.sqrt(self.dt)


def _start_at_zero(net: nn.Module, n_steps: int) -> None:
    """A sampler kernel's net: its last linear layer zeroed (the kernel starts as its
    fixed part: Brownian motion forward, the bridge backward), and a net reading the
    time t = k / T (PISNet) told T."""
    if hasattr(net, "horizon"):
        net.horizon = n_steps
    zero_output(net)


class BridgeNormal(DiagNormal):
    """N(mu, scale^2 I) per row, or a point mass at mu where `point` (B,) is true (the
    bridge's step into the source; its scale is 0 there, so sampling needs no case).
    log_prob (B,)."""

    def __init__(self, mu: torch.Tensor, scale: torch.Tensor, point: torch.Tensor):
        super().__init__(mu, scale)
        self.point = point

    @property
    def mu(self) -> torch.Tensor:
        return self.loc

    def log_prob(self, value):
        safe = torch.where(self.point[:, None], 1.0, self.scale)
        z = (value - self.loc) / safe
        lp = -0.5 * (z * z).sum(1) - safe.log().sum(1) - 0.5 * LOG_2PI * value.shape[1]
        return torch.where(self.point, 0.0, lp)


class BrownianBridge(Kernel):
    """P_B of the pinned Brownian motion: reads x_{k+1}, gives x_k; fixed, or with a
    learned correction of its mean and scale (net: x_{k+1}, step -> 2 D values, its last
    layer zero at the start, so the kernel starts as the bridge)."""

    def __init__(self, sigma: float, n_steps: int, net: nn.Module | None = None, correction: float = 0.1):
        super().__init__()
        self.sigma, self.T, self.net, self.c = sigma, n_steps, net, correction
        self.learned = net is not None
        self.register_buffer("anchor", torch.zeros(()), persistent=False)
        if net is not None:
            _start_at_zero(net, n_steps)  # no correction at the start: the bridge itself

    def dist(self, x, i, ctx=None) -> Distribution:
        k = i.to(x.dtype)[:, None]  # (B, 1): the step x_k -> x_{k+1}
        ratio = k / (k + 1)  # t_k / t_{k+1}
        scale = (self.sigma * (ratio / self.T).sqrt()).expand_as(x)
        mu = x * ratio
        if self.net is not None:
            out = self.net(x, _t(i))
            D = x.shape[1]
            mu = mu + self.c * torch.tanh(out[:, :D]) * scale
            scale = scale * torch.exp(self.c * torch.tanh(out[:, D:]))
        return BridgeNormal(mu, scale, i == 0)
