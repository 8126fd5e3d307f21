"""Kernels (the policies P_F and P_B of one step) and source priors.

Each entry states its directions, whether it is learned, its capabilities and a rule
that checks it against the step it is used on (value types, state sizes, net sizes,
schedule length). The rules run in the checker, before any tensor exists; gfdsl's
lowering builds the matching torch modules.

Capabilities:
  bijective             a deterministic invertible map; `inverse(forward)` may use it
  deterministic         P(s'|s) is a Dirac: each state has one successor (exact likelihood)
  rsample               reparameterised samples (gradients flow through the sample)
  closed_form_marginal  q(x_t | x_0) is known in closed form (DDPM noising)
  velocity              one ODE-solver step of a learned velocity field (flow matching, cfm)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gfdsl.library.registry import (
    REGISTRY, Args, Entry, KernelUse, NetRef, PosFloat, Problem, ScheduleRef,
)

FWD, BWD, BOTH = frozenset({"forward"}), frozenset({"backward"}), frozenset({"forward", "backward"})


# -- rule helpers (each returns a list of Problems) --------------------------------------


def _net_sizes(use: KernelUse, kernel: str, net, need_in: int, need_out: int, out_why: str) -> list[Problem]:
    facts = use.nets.get(str(net))
    if facts is None:
        return []
    probs = []
    if facts.in_size != need_in:
        why = f"reading {use.inp_name} ({use.inp}{', one-hot' if use.inp.dtype == 'cat' else ''})"
        if use.context_numel:
            why += f" and {use.context_numel} context values"
        probs.append(Problem("E402", "net", dict(net=str(net), which="takes", got=facts.in_size, kernel=kernel,
                                                 why=why, need=need_in, hint=facts.take_hint(str(net), need_in))))
    if facts.out_size != need_out:
        probs.append(Problem("E402", "net", dict(net=str(net), which="outputs", got=facts.out_size, kernel=kernel,
                                                 why=out_why, need=need_out,
                                                 hint=f"make net '{net}' output {need_out} values")))
    return probs


def _dtype(use: KernelUse, kernel: str, dtypes: tuple[str, ...], what: str) -> list[Problem]:
    if use.out.dtype in dtypes:
        return []
    src, dst = (use.inp_name, use.out_name) if use.direction == "forward" else (use.out_name, use.inp_name)
    return [Problem("E403", None, dict(kernel=kernel, need=f"{what} {use.out_name}, which is {use.out}",
                                        src=src, dst=dst, hint=f"use a kernel for {use.out.dtype} states"))]


def _same_shape(use: KernelUse, kernel: str) -> list[Problem]:
    if use.inp == use.out:
        return []
    src, dst = (use.inp_name, use.out_name) if use.direction == "forward" else (use.out_name, use.inp_name)
    return [Problem("E403", None, dict(kernel=kernel, need="both states of one type and shape",
                                       src=f"{src} ({use.inp if use.direction == 'forward' else use.out})",
                                       dst=f"{dst} ({use.out if use.direction == 'forward' else use.inp})",
                                       hint="give both state families the same type"))]


def _schedule(use: KernelUse, sched) -> list[Problem]:
    n = use.schedules.get(str(sched))
    if n is None or n == use.n_steps:
        return []
    return [Problem("E406", "schedule", dict(name=str(sched), got=n, need=use.n_steps))]


def _time(use: KernelUse, kernel: str, net) -> list[Problem]:
    facts = use.nets.get(str(net))
    if facts is None or facts.time_embed > 0 or use.n_steps <= 1:
        return []
    return [Problem("E605", "net", dict(kernel=kernel, net=str(net)))]


# -- kernels --------------------------------------------------------------------------------


class GaussianArgs(Args):
    """gaussian(net, std = learned): N(mu(s), sigma(s)^2 I) from a net's output."""

    net: NetRef
    std: PosFloat | None = Field(default=None, description="fixed std; omit to learn a log-variance")
    min_std: PosFloat = 1e-4


def _gaussian_rule(use: KernelUse, a: GaussianArgs) -> list[Problem]:
    k = use.out.numel
    out_why = f"for {use.out_name} ({use.out}) with its mean" + ("" if a.std else " and log-variance")
    return _dtype(use, "gaussian", ("real",), "a real") + _net_sizes(
        use, "gaussian", a.net, use.inp.net_width + use.context_numel, k if a.std else 2 * k, out_why)


class NetOnlyArgs(Args):
    net: NetRef


def _bernoulli_rule(use: KernelUse, a: NetOnlyArgs) -> list[Problem]:
    return _dtype(use, "bernoulli", ("binary",), "a binary") + _net_sizes(
        use, "bernoulli", a.net, use.inp.net_width + use.context_numel, use.out.numel,
        f"for the logits of {use.out_name} ({use.out})")


def _categorical_rule(use: KernelUse, a: NetOnlyArgs) -> list[Problem]:
    probs = _dtype(use, "categorical", ("cat", "binary"), "a categorical")
    if probs:
        return probs
    return _net_sizes(use, "categorical", a.net, use.inp.net_width + use.context_numel,
                      use.out.numel * use.out.classes, f"for the logits of {use.out_name} ({use.out})")


class DenoiserArgs(Args):
    """ddpm_denoiser(net, schedule, param = "eps", variance = "beta") (Ho et al. 2020);
    param "v" is Salimans & Ho (2022), variance "learned" Nichol & Dhariwal (2021)."""

    net: NetRef
    schedule: ScheduleRef
    param: Literal["eps", "x0", "v"] = Field(default="eps", description=(
        "what the net predicts: the noise eps, the data x0, or v = sqrt(abar) eps - sqrt(1 - abar) x0"))
    variance: Literal["beta", "beta_tilde", "learned"] = Field(default="beta", description=(
        "sigma_t^2: beta_t, beta-tilde_t, or learned: n more net outputs interpolate their logs"))
    levels: int = Field(default=0, ge=0, le=65536, description=(
        "0: a Gaussian on every step; L >= 2: the step into the data state is the discretised "
        "Gaussian decoder over L evenly spaced values in [-1, 1] (Ho et al. 2020, sec. 3.3)"))

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (no discretised decoder) or at least 2")
        return v


def _denoiser_rule(use: KernelUse, a: DenoiserArgs) -> list[Problem]:
    n = use.out.numel
    probs = []
    if a.levels and (use.data is None or use.data.dtype != "real" or use.out != use.data):
        probs.append(Problem("E403", "levels", dict(
            kernel="ddpm_denoiser", need=f"a real data state for its discretised decoder (levels = {a.levels})",
            src=use.inp_name, dst=use.out_name, hint="drop `levels`, or use it on the steps into the data state")))
    what = {"eps": "noise", "x0": "x0", "v": "v"}[a.param] + " prediction"
    if a.variance == "learned":
        what += " and variance interpolation"
    return probs + (_dtype(use, "ddpm_denoiser", ("real",), "a real") + _same_shape(use, "ddpm_denoiser")
            + _net_sizes(use, "ddpm_denoiser", a.net, n + use.context_numel, 2 * n if a.variance == "learned" else n,
                         f"for its {what} of {use.out_name} ({use.out})")
            + _time(use, "ddpm_denoiser", a.net) + _schedule(use, a.schedule))


class NoisingArgs(Args):
    """ddpm_noising(schedule): q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)."""

    schedule: ScheduleRef


def _noising_rule(use: KernelUse, a: NoisingArgs) -> list[Problem]:
    return _dtype(use, "ddpm_noising", ("real",), "a real") + _same_shape(use, "ddpm_noising") + _schedule(use, a.schedule)


class LearnedNoisingArgs(Args):
    """learned_noising(schedule, net): the noising kernel with a learned, zero-initialised
    correction of its mean and log-variance (the MLE-GFN backward policy)."""

    schedule: ScheduleRef
    net: NetRef
    max_log_var_shift: PosFloat = Field(default=1.0, description="bound on the log-variance correction")


def _learned_noising_rule(use: KernelUse, a: LearnedNoisingArgs) -> list[Problem]:
    n = use.out.numel
    return (_dtype(use, "learned_noising", ("real",), "a real") + _same_shape(use, "learned_noising")
            + _net_sizes(use, "learned_noising", a.net, n + use.context_numel, 2 * n,
                         f"for mean and log-variance corrections of {use.out_name} ({use.out})")
            + _time(use, "learned_noising", a.net) + _schedule(use, a.schedule))


class CouplingArgs(Args):
    """affine_coupling(net, parity = 0): RealNVP coupling (Dinh et al. 2017)."""

    net: NetRef
    parity: Literal[0, 1] = Field(default=0, description="which half is transformed")


class MafArgs(Args):
    """maf_affine(net, order = 0): order 1 reverses the variables (alternate it by layer)."""

    net: NetRef
    order: Literal[0, 1] = Field(default=0, description="0: natural order, 1: reversed")


_BINS = Field(default=8, ge=2, le=256, description="K bins of the rational-quadratic spline")
_BOUND = Field(default=5.0, description="the spline acts on [-bound, bound], the identity outside")


class SplineCouplingArgs(CouplingArgs):
    """spline_coupling(net, parity = 0, bins = 8, bound = 5): a coupling whose transformed
    half goes through monotone rational-quadratic splines (Durkan et al. 2019, NSF)."""

    bins: int = _BINS
    bound: PosFloat = _BOUND


class SplineARArgs(MafArgs):
    """spline_autoregressive(net, order = 0, bins = 8, bound = 5): MAF with rational-quadratic
    spline transforms (Durkan et al. 2019); the net is a made() with out_per_dim = 3 bins - 1."""

    bins: int = _BINS
    bound: PosFloat = _BOUND


def _flow_layer(use: KernelUse, kernel: str, net, per_dim: int, what: str,
                needs: tuple[str, str, str] | None = None) -> list[Problem]:
    """A flow layer: a real state mapped to one of the same shape by a net with `per_dim`
    outputs per value. needs: (entry, its name in words, a declaration) where the layer
    needs one kind of net (made() for an autoregressive layer, lu() for lu_linear); a
    coupling (needs None) splits the state in halves."""
    probs = _dtype(use, kernel, ("real",), "a real") + _same_shape(use, kernel)
    facts = use.nets.get(str(net))
    if needs and facts is not None and facts.entry != needs[0]:
        probs.append(Problem("E607", "net", dict(
            message=f"{kernel}() needs {needs[1]} net, but net '{net}' is {facts.entry}()",
            hint=f"declare the net with {needs[2]}")))
        return probs
    if probs:
        return probs
    n = use.out.numel
    if n < 2 and needs is None:
        return [Problem("E403", None, dict(kernel=kernel, need="at least 2 values to split in halves",
                                           src=use.inp_name, dst=use.out_name, hint="use a gaussian kernel in 1-D"))]
    return _net_sizes(use, kernel, net, n, per_dim * n, f"for {what} of {use.out_name} ({use.out})")


def _made(per_dim: int) -> tuple[str, str, str]:
    return "made", "a made()", f"made(in = D, out_per_dim = {per_dim})"


def _coupling_rule(use: KernelUse, a: CouplingArgs) -> list[Problem]:
    return _flow_layer(use, "affine_coupling", a.net, 2, "log-scale and shift")


def _maf_rule(use: KernelUse, a: MafArgs) -> list[Problem]:
    return _flow_layer(use, "maf_affine", a.net, 2, "log-scale and shift", _made(2))


def _spline_what(bins: int) -> str:
    return f"the {bins} widths, {bins} heights and {bins - 1} slopes of each coordinate's spline"


def _spline_coupling_rule(use: KernelUse, a: SplineCouplingArgs) -> list[Problem]:
    return _flow_layer(use, "spline_coupling", a.net, 3 * a.bins - 1, _spline_what(a.bins))


def _spline_ar_rule(use: KernelUse, a: SplineARArgs) -> list[Problem]:
    return _flow_layer(use, "spline_autoregressive", a.net, 3 * a.bins - 1, _spline_what(a.bins), _made(3 * a.bins - 1))


def _lu_rule(use: KernelUse, a: "NetOnlyArgs") -> list[Problem]:
    n = use.out.numel
    return _flow_layer(use, "lu_linear", a.net, 1, f"the {n} x {n} matrix", ("lu", "an lu()", f"lu(in = {n})"))


RK_STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}  # net calls per step of each solver (runtime/ode.TABLEAUX)


class OdeArgs(Args):
    """ode_flow(net, solver = "euler", trace = "exact"): one solver step of dx/dt = net(x, t)
    per chain step, t in [0, 1] (Chen et al. 2018); the log-density by the instantaneous
    change of variables, its divergence exact or by Hutchinson's estimator (FFJORD)."""

    net: NetRef
    solver: Literal["euler", "midpoint", "rk4"] = Field(default="euler", description=(
        "the explicit Runge-Kutta method of each step: 1, 2 or 4 net calls"))
    trace: Literal["exact", "hutchinson"] = Field(default="exact", description=(
        "div v exactly (one backward pass per value) or by e^T (dv/dx) e, e Rademacher (one pass)"))


def _ode_rule(use: KernelUse, a: OdeArgs) -> list[Problem]:
    probs = _dtype(use, "ode_flow", ("real",), "a real") + _same_shape(use, "ode_flow")
    if probs:
        return probs
    n = use.out.numel
    return (_net_sizes(use, "ode_flow", a.net, n, n, f"for the velocity of {use.out_name} ({use.out})")
            + _time(use, "ode_flow", a.net))


def _next_token_rule(use: KernelUse, a: NetOnlyArgs) -> list[Problem]:
    i, o = use.inp, use.out
    if o.dtype not in ("cat", "binary") or i.dtype != o.dtype or i.params != o.params or len(o.shape) != 1 \
            or len(i.shape) != 1 or o.shape[0] != i.shape[0] + 1:
        return [Problem("E403", None, dict(kernel="next_token", need="a token prefix growing by one",
                                           src=f"{use.inp_name} ({i})", dst=f"{use.out_name} ({o})",
                                           hint="declare e.g. `state x[i in 0..D] : cat(2)[i]`"))]
    length = use.data.numel if use.data is not None else o.shape[0]
    return _net_sizes(use, "next_token", a.net, length, length * o.classes,
                      f"for {o.classes} logits at each of the {length} positions")


class NoArgs(Args):
    pass


def _truncate_rule(use: KernelUse, a: NoArgs) -> list[Problem]:
    i, o = use.inp, use.out
    if i.dtype != o.dtype or len(i.shape) != 1 or len(o.shape) != 1 or i.shape[0] != o.shape[0] + 1:
        return [Problem("E403", None, dict(kernel="truncate", need="a prefix one token longer than its parent",
                                           src=f"{use.out_name} ({o})", dst=f"{use.inp_name} ({i})",
                                           hint="truncate() drops the last token of a prefix"))]
    return []


class InverseArgs(Args):
    """inverse(forward): the inverse of the step's bijective forward kernel."""


_learned = lambda a: True  # noqa: E731
K = "kernel"
REGISTRY.add(Entry("gaussian", K, GaussianArgs, "diagonal Gaussian whose mean (and log-variance) a net predicts",
                   BOTH, frozenset({"rsample"}), _learned, _gaussian_rule))
REGISTRY.add(Entry("bernoulli", K, NetOnlyArgs, "independent Bernoulli bits from a net's logits",
                   BOTH, frozenset(), _learned, _bernoulli_rule))
REGISTRY.add(Entry("categorical", K, NetOnlyArgs, "independent categoricals from a net's logits",
                   BOTH, frozenset(), _learned, _categorical_rule))
REGISTRY.add(Entry("ddpm_denoiser", K, DenoiserArgs, "DDPM reverse step p(x_{t-1} | x_t): eps, x0 or v predicted, fixed or learned variance",
                   FWD, frozenset({"rsample"}), _learned, _denoiser_rule))
REGISTRY.add(Entry("ddpm_noising", K, NoisingArgs, "fixed DDPM noising q(x_t | x_{t-1}) with closed-form marginal",
                   BWD, frozenset({"rsample", "closed_form_marginal"}), lambda a: False, _noising_rule))
REGISTRY.add(Entry("learned_noising", K, LearnedNoisingArgs, "noising kernel with learned mean/variance corrections (MLE-GFN)",
                   BWD, frozenset({"rsample"}), _learned, _learned_noising_rule))
REGISTRY.add(Entry("affine_coupling", K, CouplingArgs, "RealNVP affine coupling bijection",
                   BOTH, frozenset({"bijective", "deterministic"}), _learned, _coupling_rule))
REGISTRY.add(Entry("maf_affine", K, MafArgs, "masked autoregressive affine bijection (MAF)",
                   BOTH, frozenset({"bijective", "deterministic"}), _learned, _maf_rule))
REGISTRY.add(Entry("spline_coupling", K, SplineCouplingArgs, "coupling bijection with rational-quadratic splines (NSF)",
                   BOTH, frozenset({"bijective", "deterministic"}), _learned, _spline_coupling_rule))
REGISTRY.add(Entry("spline_autoregressive", K, SplineARArgs, "masked autoregressive bijection with rational-quadratic splines",
                   BOTH, frozenset({"bijective", "deterministic"}), _learned, _spline_ar_rule))
REGISTRY.add(Entry("lu_linear", K, NetOnlyArgs, "invertible linear map W x + b by an lu() net (Glow's LU form), mixing coordinates",
                   BOTH, frozenset({"bijective", "deterministic"}), _learned, _lu_rule))
REGISTRY.add(Entry("ode_flow", K, OdeArgs, "one ODE-solver step of a learned velocity field dx/dt = v(x, t) (flow matching)",
                   BOTH, frozenset({"bijective", "deterministic", "velocity"}), _learned, _ode_rule))
REGISTRY.add(Entry("next_token", K, NetOnlyArgs, "append one token drawn from a net's softmax over the prefix",
                   FWD, frozenset(), _learned, _next_token_rule))
REGISTRY.add(Entry("truncate", K, NoArgs, "drop the last token: the one parent of a prefix (P_B = 1)",
                   BWD, frozenset({"deterministic"}), lambda a: False, _truncate_rule))
REGISTRY.add(Entry("inverse", K, InverseArgs, "the inverse of the step's bijective forward kernel",
                   BWD, frozenset({"bijective", "deterministic"}), lambda a: False, None))


# -- priors of the source state -------------------------------------------------------------


class NormalArgs(Args):
    """normal(mean = 0, std = 1): isotropic Gaussian prior."""

    mean: float = 0.0
    std: PosFloat = 1.0


class BernoulliPriorArgs(Args):
    p: float = Field(default=0.5, gt=0, lt=1)


class UniformArgs(Args):
    pass


class PointArgs(Args):
    """point(value): a point mass; written `source x = 0` (one value for every
    coordinate) or `source x = [0, 1]`. Its log-probability is 0."""

    value: list[float] = Field(min_length=1)


P = "prior"
REGISTRY.add(Entry("normal", P, NormalArgs, "isotropic Gaussian N(mean, std^2 I)", info={"dtypes": ("real",)}))
REGISTRY.add(Entry("bernoulli", P, BernoulliPriorArgs, "independent Bernoulli(p) bits", info={"dtypes": ("binary",)}))
REGISTRY.add(Entry("uniform", P, UniformArgs, "uniform over every value of a discrete state",
                   info={"dtypes": ("binary", "cat")}))
REGISTRY.add(Entry("point", P, PointArgs, "a point mass at `value` (write `source x = value`)",
                   frozenset({"forward", "backward"}), frozenset({"deterministic"}), info={"dtypes": ("real",)}))
