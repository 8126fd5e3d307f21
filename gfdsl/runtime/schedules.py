"""Noise schedules as buffers, computed in float64 and stored in float32.

For betas beta_1..beta_T (Ho et al. 2020, eq. 4-7):
  alpha_t = 1 - beta_t,  abar_t = prod_{s<=t} alpha_s
  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)
  q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, beta_tilde_t I),
  beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
Index i = t - 1 (0-based) throughout.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def betas(entry: str, args: dict) -> torch.Tensor:
    n = args["steps"]
    if entry == "linear":
        return torch.linspace(args["start"], args["end"], n, dtype=torch.float64)
    if entry == "cosine":  # Nichol & Dhariwal (2021), eq. 17
        s = args["s"]
        f = lambda t: math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        b = [min(1 - f(t + 1) / f(t), args["max_beta"]) for t in range(n)]
        return torch.tensor(b, dtype=torch.float64)
    raise KeyError(entry)


def build_entry(args: dict, ctx) -> torch.Tensor:
    """The registry's `build` for gfdsl.library.schedules: the betas (T,) float64."""
    return betas(ctx.entry, args)


class Schedule(nn.Module):
    """All per-step constants of a beta schedule, as (T,) float32 buffers."""

    def __init__(self, entry: str, args: dict):
        super().__init__()
        from gfdsl.plugins import construct

        b = construct("schedule", entry, args)  # built-in or a plugin's betas
        a = 1 - b
        abar = torch.cumprod(a, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        beta_tilde = b * (1 - abar_prev) / (1 - abar)
        consts = {
            "beta": b,
            "log_beta": b.log(),
            "sqrt_alpha": a.sqrt(),
            "abar": abar,
            "sqrt_abar": abar.sqrt(),
            "sqrt_1m_abar": (1 - abar).sqrt(),
            "eps_coef": b / (1 - abar).sqrt(),  # mean = (x_t - eps_coef * eps) / sqrt(alpha) (Ho et al. eq. 11)
            "inv_sqrt_alpha": 1 / a.sqrt(),
            "beta_tilde": beta_tilde,
            # log beta_tilde at t = 1 is log 0: use beta_tilde_2 there (Ho et al.'s clipping)
            "log_beta_tilde": torch.cat([beta_tilde[1:2], beta_tilde[1:]]).log() if len(b) > 1 else b.log(),
            "c0": abar_prev.sqrt() * b / (1 - abar),
            "ct": a.sqrt() * (1 - abar_prev) / (1 - abar),
        }
        for k, v in consts.items():
            self.register_buffer(k, v.float(), persistent=False)
        self.T = len(b)
