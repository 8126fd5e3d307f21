"""Kernels of diffusion samplers (Zhang & Chen 2022, PIS; Sendera et al. 2024): a
controlled SDE forward from a point, the pinned Brownian motion backward. Torch-free;
gfdsl.runtime.samplers holds the modules."""

from __future__ import annotations

from pydantic import Field

from gfdsl.library.kernels import FWD, BWD, _dtype, _net_sizes, _same_shape, _time
from gfdsl.library.registry import REGISTRY, Args, Entry, KernelUse, NetRef, PosFloat, Problem


class SdeArgs(Args):
    """controlled_sde(net, sigma = 1.0, langevin = false, learned_variance = false):
    N(x + f(x, t) dt, sigma^2 dt I) on t_k = k / T, f from the net (its last layer starts
    at zero: Brownian motion); with langevin, f = net[:D] + net[D:2D] * grad log R(x);
    with learned_variance, the next D outputs v scale each coordinate's variance by
    exp(4 tanh(v)) (Sendera et al. 2024's log-variance range 4)."""

    net: NetRef
    sigma: PosFloat = Field(default=1.0, le=1e4, description="diffusion coefficient: std of the Brownian motion at t = 1")
    langevin: bool = Field(default=False, description="add a learned per-coordinate scale times grad log R(x)")
    learned_variance: bool = Field(default=False, description="learn a per-coordinate variance factor in [e^-4, e^4]")


def _sde_rule(use: KernelUse, a: SdeArgs) -> list[Problem]:
    probs = _dtype(use, "controlled_sde", ("real",), "a real") + _same_shape(use, "controlled_sde")
    if probs:
        return probs
    n = use.out.numel
    out = n * (1 + a.langevin + a.learned_variance)
    why = f"for its drift of {use.out_name} ({use.out})" + (" and its Langevin scale" if a.langevin else "") \
        + (" and its log-variance" if a.learned_variance else "")
    probs = _net_sizes(use, "controlled_sde", a.net, n + use.context_numel, out, why) + _time(use, "controlled_sde", a.net)
    if a.langevin and not use.rewarded:
        probs.append(Problem("E607", "langevin", dict(
            message="langevin = true reads grad log R(x), but this model has no reward or energy",
            hint="drop `langevin`, or declare an `energy = ...`")))
    return probs


class BridgeArgs(Args):
    """brownian_bridge(sigma = 1.0, net = none, correction = 0.1): P_B(x_k | x_{k+1}) =
    N(x_{k+1} t_k / t_{k+1}, s_k^2 I), s_k^2 = sigma^2 dt t_k / t_{k+1}: the Brownian
    motion from 0 conditioned on its end. With a net (2 D outputs u, v) the learned
    correction N(x_{k+1} t_k / t_{k+1} + c tanh(u) s_k, (s_k e^{c tanh(v)})^2 I), c the
    correction range, stays close to the bridge (Sendera et al. 2024; torchgfn's
    DiffusionPISGradNetBackward)."""

    sigma: PosFloat = Field(default=1.0, le=1e4, description="diffusion coefficient, as the forward kernel's")
    net: NetRef | None = Field(default=None, description="a net of 2 D outputs: a learned correction of mean and scale")
    correction: PosFloat = Field(default=0.1, le=10.0, description="range c of the learned correction")


def _bridge_rule(use: KernelUse, a: BridgeArgs) -> list[Problem]:
    probs = _dtype(use, "brownian_bridge", ("real",), "a real") + _same_shape(use, "brownian_bridge")
    if a.net is not None and not probs:
        n = use.out.numel
        probs += _net_sizes(use, "brownian_bridge", a.net, n, 2 * n,
                            f"for the correction of its mean and scale of {use.out_name} ({use.out})") \
            + _time(use, "brownian_bridge", a.net)
    p = use.source_point  # () when the source itself had an error (reported there)
    if p is None or p and any(v != 0 for v in p):
        what = "not a point" if p is None else "the point " + (f"{p[0]:g}" if len(set(p)) == 1 else str(list(p)))
        probs.append(Problem("E607", None, dict(
            message=f"brownian_bridge() is pinned at 0 at time 0, but the source is {what}",
            hint="start the chain at `source x[0] = 0`")))
    return probs


K = "kernel"
REGISTRY.add(Entry("controlled_sde", K, SdeArgs, "Euler-Maruyama step of a learned drift (diffusion sampler's P_F)",
                   FWD, frozenset({"rsample"}), lambda a: True, _sde_rule))
REGISTRY.add(Entry("brownian_bridge", K, BridgeArgs, "pinned Brownian motion from 0 (diffusion sampler's P_B), "
                   "optionally with a learned correction", BWD, frozenset({"rsample"}), lambda a: a.net is not None,
                   _bridge_rule))
