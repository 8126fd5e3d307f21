"""Conditional flow matching: the `cfm` objective of a chain of ode_flow steps.

The chain's P_F is deterministic: x_T = Phi(x_0), Phi the flow of dx/dt = v(x, t) on
[0, 1] (runtime/ode.py). A GFlowNet trained on data fits P_F to backward trajectories
from data; flow matching picks, for each pair (x_0, x_1) of a coupling pi of the source
and the data, the straight trajectory x_t = (1 - t) x_0 + t x_1 (+ sigma noise) as that
backward trajectory, and regresses the velocity on its time derivative x_1 - x_0 at one
uniformly drawn time (Lipman et al. 2023, conditional flow matching; Liu et al. 2023,
rectified flow, sigma = 0; Tong et al. 2024, minibatch OT coupling):

  L = E_{t ~ U(0, 1), (x_0, x_1) ~ pi, eps} || v(x_t, t) - (x_1 - x_0) ||^2 / D,
  x_t = (1 - t) x_0 + t x_1 + sigma eps

with pi the independent coupling or, with coupling = "ot", the exact optimal-transport
assignment of the batch under squared Euclidean cost (POT's `ot.emd`). It plays the part
of L_simple for a diffusion: one step of a regression instead of a trajectory.
"""

from __future__ import annotations

import torch

from gfdsl.errors import GfdslError, diag


def ode_kernel(model):
    """The one ode_flow kernel every step of the model uses, at positions 0..T-1 from
    the source in time order; None otherwise."""
    steps = model.space.plan.steps if hasattr(model.space, "plan") else ()
    ks = {s.fwd for s in steps}
    k = model.space.kernels[next(iter(ks))] if len(ks) == 1 else None
    ok = getattr(k, "velocity_field", False) and [s.pos for s in steps] == list(range(len(steps)))
    return k if ok else None


def velocity_kernel(model, span, source):
    """ode_kernel(model) for the cfm objective; E802 where there is none."""
    k = ode_kernel(model)
    if k is None:
        from gfdsl.lang.source import Span

        raise GfdslError([diag("E802", source, Span(*span) if span else None,
                               message="cfm() needs one ode_flow() forward kernel on every step, from the source "
                                       "to the data in time order",
                               hint="write `step x[t - 1] -> x[t] for t in 1..T { forward = ode_flow(net = v) ... }`")])
    return k


def ot_pairs(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The permutation p (B,) with x0[p[j]] paired to x1[j] that minimises the summed
    squared distance: the exact assignment (Tong et al. 2024, minibatch OT)."""
    import numpy as np
    import ot

    B = x0.shape[0]
    cost = torch.cdist(x0.detach().double(), x1.detach().double()).pow(2).cpu().numpy()
    w = np.full(B, 1.0 / B)
    plan = ot.emd(w, w, cost)  # (B, B): a permutation matrix / B for equal uniform weights
    return torch.as_tensor(plan.argmax(0), device=x0.device)


def cfm_loss(k, x0: torch.Tensor, x1: torch.Tensor, sigma: float, coupling: str):
    """(loss, net output) on a batch of source draws x0 and data x1, both (B, D)."""
    if coupling == "ot":
        x0 = x0[ot_pairs(x0, x1)]
    t = torch.rand(x1.shape[0], device=x1.device, dtype=x1.dtype)
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    if sigma > 0:
        xt = xt + sigma * torch.randn_like(xt)
    v = k.velocity(xt, t)
    return ((v - (x1 - x0)) ** 2).mean(), v
