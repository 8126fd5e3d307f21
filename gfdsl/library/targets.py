"""Targets of balance training: rewards R(x) and energies E(x) (R = exp(-E)) of the
terminal state. Each entry says which value types it reads (`types`, checked against the
terminal state with its `rule`), and what it knows in closed form: `log_z` (the exact
log partition function, for Delta log Z) and `samples` (whether it can draw exact
samples, for the 2-Wasserstein distance and mode coverage). Torch-free; the run-time
halves are in gfdsl.runtime.targets.
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator, model_validator

from gfdsl.files import relative_input
from gfdsl.library.registry import REGISTRY, Args, Entry, NonNegInt, PosFloat, PosInt, Problem, StateType

R, E = "reward", "energy"

BUILD = "gfdsl.runtime.builtin_targets:build"  # the torch half of every entry here (gfdsl.plugins.construct)


# -- rewards -------------------------------------------------------------------------------


class RewardArgs(Args):
    log_min: float = Field(default=-100.0, description="log R(x) is clipped from below at this value")


class HypergridArgs(RewardArgs):
    """hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0): Bengio et al. (2021), eq. in section 4.1:
    with a_d = |s_d / (H - 1) - 0.5|, R(s) = r0 + r1 prod_d [0.25 < a_d]
    + r2 prod_d [0.3 < a_d < 0.4]."""

    r0: float = Field(default=0.1, ge=0)
    r1: float = Field(default=0.5, ge=0)
    r2: float = Field(default=2.0, ge=0)

    @model_validator(mode="after")
    def _not_zero(self):
        if self.r0 == 0 and self.r1 == 0 and self.r2 == 0:
            raise ValueError("r0, r1 and r2 are all 0, so R = 0 on every state and R / Z is undefined")
        return self


class ModesArgs(RewardArgs):
    """hamming_modes(n = 8, beta = 3.0, seed = 0): n reference sequences drawn uniformly
    from the seed; log R(x) = -beta * min_m d_H(x, m) / L (Malkin et al. 2022's bit-sequence
    task; a missing position counts as a mismatch)."""

    n: PosInt = Field(default=8, le=100_000)
    beta: float = Field(default=3.0, ge=0)
    seed: NonNegInt = 0


class TableArgs(RewardArgs):
    """table(file, log = false): R(x) read from a .npy file (path relative to the spec),
    one value per state of the action space in gfdsl's enumeration order: int(lo, hi)[D]
    side^D values, coordinate 0 varying fastest; set[N] 2^N values by the items' bits;
    seq(V)[L] every sequence of length 0..L in turn, each length as base-V numbers
    (docs/language.md, Data files)."""

    file: str = Field(min_length=1)
    log: bool = False

    @field_validator("file")
    @classmethod
    def _safe(cls, v: str) -> str:
        return relative_input(v, (".npy",))


def _info(types: tuple[str, ...], need: str, rule=None, log_z=None, samples: bool = False) -> dict:
    return {"types": types, "need": need, "rule": rule, "log_z": log_z, "samples": samples}


REGISTRY.add(Entry("hypergrid", R, HypergridArgs, "hypergrid reward of Bengio et al. (2021): r0 + r1 outer ring + r2 band",
                   info=_info(("int",), "integer vectors (int(lo, hi)[D])"), build=BUILD))
REGISTRY.add(Entry("hamming_modes", R, ModesArgs, "exp(-beta * Hamming distance to the nearest of n seeded modes / L)",
                   info=_info(("seq", "set"), "sequences or sets"), build=BUILD))
REGISTRY.add(Entry("table", R, TableArgs, "a reward per state from a .npy file",
                   info=_info(("int", "set", "seq"), "a discrete space (int, set or seq)"), build=BUILD))


# -- real-valued targets ----------------------------------------------------------------------


class MixtureArgs(Args):
    """gaussian_mixture(means, scales, weights = equal): E(x) = -log sum_k w_k N(x; mu_k,
    s_k^2 I), normalised, so log Z = log sum_k w_k (0 for the default equal weights)."""

    means: list[list[float]] = Field(min_length=1, max_length=10_000, description="component means, one list each")
    scales: list[PosFloat] = Field(min_length=1, description="standard deviation of each component (or one for all)")
    weights: list[PosFloat] | None = Field(default=None, description="unnormalised weights; default: equal, summing to 1")

    @model_validator(mode="after")
    def _shapes(self):
        k, d = len(self.means), len(self.means[0])
        if d < 1 or any(len(m) != d for m in self.means):
            raise ValueError("every mean needs the same positive number of coordinates")
        if len(self.scales) not in (1, k):
            raise ValueError(f"scales has {len(self.scales)} values; give one, or one per component ({k})")
        if self.weights is not None and len(self.weights) != k:
            raise ValueError(f"weights has {len(self.weights)} values, but there are {k} components")
        return self


def _mixture_rule(a: MixtureArgs, t: StateType) -> Problem | None:
    d = len(a.means[0])
    if t.numel == d:
        return None
    return Problem("E410", "means", dict(what="gaussian_mixture()", need=f"{d} coordinates (its means have {d})",
                                         state="", type=str(t), hint=f"give means of {t.numel} coordinates"))


def _mixture_log_z(a: MixtureArgs) -> float:
    return 0.0 if a.weights is None else math.log(sum(a.weights))


class LogisticArgs(Args):
    """logistic(coord = 0, scale = 1, offset = 0): R(x) = sigmoid(scale * (x[coord] - offset)),
    a soft half-space: it keeps the x with x[coord] above the offset (a posterior's tilt)."""

    coord: NonNegInt = 0
    scale: float = Field(default=1.0, ge=-1e4, le=1e4)
    offset: float = 0.0


def _logistic_rule(a: LogisticArgs, t: StateType) -> Problem | None:
    if a.coord < t.numel:
        return None
    return Problem("E411", "coord", dict(arg="coord", value=a.coord, what="coordinates", state="", range=f"0..{t.numel - 1}",
                                         hint=""))


REGISTRY.add(Entry("gaussian_mixture", E, MixtureArgs, "mixture of isotropic Gaussians (exact log Z and samples)",
                   info=_info(("real",), "real vectors", _mixture_rule, _mixture_log_z, samples=True), build=BUILD))
REGISTRY.add(Entry("logistic", R, LogisticArgs, "sigmoid(scale * (x[coord] - offset)): a soft half-space",
                   info=_info(("real",), "real vectors", _logistic_rule), build=BUILD))




# -- the benchmark energies of diffusion samplers (Sendera et al. 2024, arXiv 2402.05098) ----------


class Gmm25Args(Args):
    """gmm25(variance = 0.3): the 25 Gaussians on the grid {-10, -5, 0, 5, 10}^2, equal
    weights, covariance variance * I; normalised, log Z = 0."""

    variance: PosFloat = Field(default=0.3, le=1e4, description="each component's variance")


class FunnelArgs(Args):
    """funnel(dim = 10): Neal's funnel, x_0 ~ N(0, 9), x_i | x_0 ~ N(0, exp(x_0)) for
    i = 1..dim-1; normalised, log Z = 0."""

    dim: PosInt = Field(default=10, ge=2, le=100_000)


class ManywellArgs(Args):
    """manywell(dim = 32): dim / 2 independent double wells, E(x1, x2) = x1^4 - 6 x1^2
    + 0.5 x1 + 0.5 x2^2 on each coordinate pair; log Z = dim / 2 * (log of a 1-D
    quadrature of exp(-x^4 + 6 x^2 - 0.5 x) + log sqrt(2 pi))."""

    dim: PosInt = Field(default=32, ge=2, le=100_000)

    @field_validator("dim")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"dim = {v} is odd: the wells come in coordinate pairs")
        return v


def _dim_rule(name: str, dim):
    def rule(a, t: StateType) -> Problem | None:
        d = dim(a)
        if t.numel == d:
            return None
        arg = "dim" if "dim" in type(a).model_fields else None
        return Problem("E410", arg, dict(what=f"{name}()", need=f"{d} coordinates", state="", type=str(t),
                                         hint=f"declare the state real[{d}]" if arg is None else
                                         f"give dim = {t.numel}, or declare the state real[{d}]"))
    return rule


REGISTRY.add(Entry("gmm25", E, Gmm25Args, "25 Gaussians on a 5x5 grid of spacing 5 (exact log Z = 0 and samples)",
                   info=_info(("real",), "real vectors", _dim_rule("gmm25", lambda a: 2), lambda a: 0.0, samples=True), build=BUILD))
REGISTRY.add(Entry("funnel", E, FunnelArgs, "Neal's funnel (exact log Z = 0 and samples)",
                   info=_info(("real",), "real vectors", _dim_rule("funnel", lambda a: a.dim), lambda a: 0.0,
                              samples=True), build=BUILD))
REGISTRY.add(Entry("manywell", E, ManywellArgs, "dim / 2 independent double wells (log Z by quadrature, exact samples)",
                   info=_info(("real",), "real vectors", _dim_rule("manywell", lambda a: a.dim), samples=True), build=BUILD))
