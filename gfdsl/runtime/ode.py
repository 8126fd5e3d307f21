"""A continuous-time flow dx/dt = v(x, t) on t in [0, 1] as the steps of a chain: step k
of T maps x(t_k) to x(t_{k+1}), t_k = k / T, by one step of an ODE solver, a Dirac P_F
whose backward is the same solver run back in time (Chen et al. 2018, neural ODEs;
trained by flow matching, Lipman et al. 2023, gfdsl.engine.flowmatching).

The log-density follows the instantaneous change of variables
d log p(x(t)) / dt = -div v(x(t), t) (Chen et al. 2018, thm. 1), integrated by the same
solver beside x: the step's log|det J| is the integral of div v over the step. The
divergence is exact (D backward passes, for small D) or Hutchinson's estimate
e^T (dv/dx) e with a Rademacher e (Grathwohl et al. 2019, FFJORD): unbiased, one pass.

The net reads (x, TIME_SCALE * t): its sinusoidal time embedding sees the range a
1000-step diffusion's step index covers. Shapes: x (B, D), t (B,), div (B,).
"""

from __future__ import annotations

import torch
from torch import nn

from gfdsl.runtime.flows import Bijection
from gfdsl.runtime.nets import shared_step

TIME_SCALE = 1000.0
# (c_i, a_i) of explicit Runge-Kutta tableaux: stage i reads t + c_i h and x + h sum_j a_ij k_j;
# the step is x + h sum_i b_i k_i
TABLEAUX = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "rk4": ((0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}


class ODEFlow(Bijection):
    """ode_flow(net, solver, trace): one solver step of dx/dt = net(x, t) per chain step."""

    velocity_field = True  # flow matching (the `cfm` objective) regresses this kernel's net

    def __init__(self, net: nn.Module, n_steps: int, solver: str = "euler", trace: str = "exact"):
        super().__init__()
        self.net, self.T, self.solver, self.trace = net, n_steps, solver, trace

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x, t) (B, D) at times t (B,) in [0, 1]; a stride-0 t stays one (the net then
        computes the time embedding once for the batch)."""
        if shared_step(t):
            return self.net(x, (t[:1] * TIME_SCALE).expand(t.shape[0]))
        return self.net(x, t * TIME_SCALE)

    def _v_div(self, x, t, e, need_div: bool = True):
        """(v, div v) at (x, t) (div None unless need_div); the graph to the parameters is
        kept only when training (a likelihood trained through the solver, `mle`)."""
        if not need_div:
            return self.velocity(x, t), None
        train = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_()
            v = self.velocity(xg, t)
            if e is None:  # exact: the Jacobian's diagonal, one backward pass per value
                div = sum(torch.autograd.grad(v[:, d].sum(), xg, create_graph=train, retain_graph=True)[0][:, d]
                          for d in range(x.shape[1]))
            else:
                div = (torch.autograd.grad((v * e).sum(), xg, create_graph=train)[0] * e).sum(1)
        return (v, div) if train else (v.detach(), div.detach())

    def _solve(self, x, i, sign: float, T: int, need_div: bool = True):
        """One solver step on a grid of T steps, from t_i (sign 1) or back from t_{i+1}
        (sign -1): (x', the integral of div v dt over the step in the direction taken)."""
        h = sign / T
        B, off = x.shape[0], 0 if sign > 0 else 1
        if shared_step(i):  # one time for the batch: keep it a stride-0 view
            def at(c):
                return ((i[:1] + off).to(x.dtype) / T + c * h).expand(B)
        else:
            def at(c):
                return (i + off).to(x.dtype) / T + c * h
        e = None
        if need_div and self.trace == "hutchinson":
            e = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
        c, a, b = TABLEAUX[self.solver]
        ks, divs = [], []
        for ci, ai in zip(c, a):
            xs = x
            for aij, kj in zip(ai, ks):
                if aij:
                    xs = xs + (h * aij) * kj
            v, div = self._v_div(xs, at(ci), e, need_div)
            ks.append(v)
            divs.append(div)
        y = x + h * sum(bi * k for bi, k in zip(b, ks) if bi)
        return y, (h * sum(bi * d for bi, d in zip(b, divs) if bi) if need_div else None)

    def forward_map(self, x, i):
        return self._solve(x, i, 1.0, self.T)

    def inverse_map(self, y, i):
        return self._solve(y, i, -1.0, self.T)

    def integrate(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """x(0) -> x(1) in `steps` solver steps, no divergence: sampling with a chosen
        number of steps (`gfdsl sample RUN --steps S`); the chain's T stays the
        likelihood's."""
        pos = torch.zeros(1, dtype=torch.long, device=x.device)
        for j in range(steps):
            x, _ = self._solve(x, (pos + j).expand(x.shape[0]), 1.0, steps, need_div=False)
        return x
