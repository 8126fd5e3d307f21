"""The torch halves of gfdsl's built-in rewards and energies (the registry's `build` for
gfdsl.library.targets): entry name -> its run-time Target."""

from __future__ import annotations

from gfdsl.runtime import energies
from gfdsl.runtime.targets import DiscreteReward, GaussianMixture, Logistic, Target

REAL = {"gaussian_mixture": GaussianMixture, "logistic": Logistic, "gmm25": energies.gmm25,
        "funnel": energies.Funnel, "manywell": energies.Manywell}


def build(args: dict, ctx) -> Target:
    """The target of entry ctx.entry (ctx: a gfdsl.plugins.Context) from its IR arguments;
    the discrete rewards (hypergrid, hamming_modes, table) read the action space."""
    if ctx.entry in REAL:
        return REAL[ctx.entry](args)
    return DiscreteReward(ctx.entry, args, ctx.space, ctx.inputs)
