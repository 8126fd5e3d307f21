"""Fixed noise schedules: beta_1..beta_T for Gaussian diffusion (stored as buffers)."""

from __future__ import annotations

from pydantic import Field, model_validator

from gfdsl.library.registry import REGISTRY, Args, Entry, PosInt


class LinearArgs(Args):
    """linear(start = 1e-4, end = 0.02, steps): beta_t linear in t (Ho et al. 2020)."""

    start: float = Field(default=1e-4, gt=0, lt=1)
    end: float = Field(default=0.02, gt=0, lt=1)
    steps: PosInt

    @model_validator(mode="after")
    def _order(self):
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) must not exceed end ({self.end})")
        return self


class CosineArgs(Args):
    """cosine(steps, s = 0.008, max_beta = 0.999): Nichol & Dhariwal (2021)."""

    steps: PosInt
    s: float = Field(default=0.008, ge=0, lt=1)
    max_beta: float = Field(default=0.999, gt=0, lt=1)


BUILD = "gfdsl.runtime.schedules:build_entry"  # the torch half (gfdsl.plugins.construct)

REGISTRY.add(Entry("linear", "schedule", LinearArgs, "betas linear from start to end over `steps` steps", build=BUILD))
REGISTRY.add(Entry("cosine", "schedule", CosineArgs, "cosine alpha-bar schedule (Nichol & Dhariwal 2021)",
                   build=BUILD))
