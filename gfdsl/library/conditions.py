"""Distributions a reward-driven model draws its real conditions from during training
(`condition beta : real ~ uniform(lo = 0.5, hi = 2.0)`): a model of R(x)^beta for every beta in
the range at once (a temperature-conditioned GFlowNet; Zhang et al. 2023, recursionpharma's
gflownet). Int conditions need none: they come from a data set's labels, or are drawn
uniformly over their values.

Each entry's `support(args)` gives (lo, hi), the default evaluation points' ends.
"""

from __future__ import annotations

from pydantic import model_validator

from gfdsl.library.registry import REGISTRY, Args, Entry


class UniformArgs(Args):
    """uniform(lo, hi): every coordinate uniform on [lo, hi]."""

    lo: float
    hi: float

    @model_validator(mode="after")
    def _order(self):
        if not self.lo < self.hi:
            raise ValueError(f"needs lo < hi, got lo = {self.lo:g}, hi = {self.hi:g}")
        if max(abs(self.lo), abs(self.hi)) > 1e6:
            raise ValueError("the range must lie within [-1e6, 1e6]")
        return self


class LogUniformArgs(UniformArgs):
    """loguniform(lo, hi): log of every coordinate uniform on [log lo, log hi], 0 < lo < hi."""

    @model_validator(mode="after")
    def _positive(self):
        if self.lo <= 0:
            raise ValueError(f"needs lo > 0, got {self.lo:g}")
        return self


C = "condition"
REGISTRY.add(Entry("uniform", C, UniformArgs, "a real condition uniform on [lo, hi]",
                   info={"support": lambda a: (a.lo, a.hi)}))
REGISTRY.add(Entry("loguniform", C, LogUniformArgs, "a real condition log-uniform on [lo, hi]",
                   info={"support": lambda a: (a.lo, a.hi)}))
