"""Training objectives: pure functions of trajectories that compose linearly.

`objective = elbo + 0.25 * tbc(k = 2)` is a weighted sum of registered terms. Each entry
says which policies its gradient trains (`trains`, given its arguments) and what the
model must offer (`needs`): a learned backward policy, or one trajectory per data point.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gfdsl.library.registry import REGISTRY, Args, Entry, PosInt

Train = Literal["pf", "pb", "both"]


class ElboArgs(Args):
    """elbo(weighting = "full", train = "pf"): E_{P_B(tau|x)}[log P_F(tau) - log P_B(tau|x)].

    weighting "simple" is Ho et al.'s L_simple reweighting for DDPM denoisers;
    train "pf" detaches log P_B (the design's default), "both" trains P_B too
    (reparameterised, as in a VAE).
    """

    weighting: Literal["full", "simple"] = "full"
    train: Literal["pf", "both"] = "pf"


class TbcArgs(Args):
    """tbc(k = 2, train = "pb", form = "pairwise"): trajectory-balance consistency.

    For K backward trajectories of one x, a_k = log P_F(tau_k) - log P_B(tau_k|x) must
    agree; pairwise: (a_1 - a_2)^2 (K = 2); variance: K * Var_k(a_k).
    """

    k: PosInt = Field(default=2, ge=2, le=1024)
    train: Literal["pb", "both"] = "pb"
    form: Literal["pairwise", "variance"] = "pairwise"

    @model_validator(mode="after")
    def _pairwise(self):
        if self.form == "pairwise" and self.k != 2:
            raise ValueError(f'form "pairwise" compares two trajectories; with k = {self.k} use form = "variance"')
        return self


class NoArgs(Args):
    pass


class IpfArgs(Args):
    """ipf(rounds): iterative proportional fitting for Schrodinger bridges (De Bortoli et
    al. 2021): alternate KL(P_B || P_F) over P_F and KL(P_F || P_B) over P_B."""

    rounds: PosInt = Field(le=1000)


O = "objective"
REGISTRY.add(Entry("elbo", O, ElboArgs, "evidence lower bound with backward trajectories from data",
                   info={"trains": lambda a: {"pf"} if a.train == "pf" else {"pf", "pb"}}))
REGISTRY.add(Entry("tbc", O, TbcArgs, "trajectory-balance consistency regulariser (MLE-GFN)",
                   info={"trains": lambda a: {"pb"} if a.train == "pb" else {"pf", "pb"}, "needs": "learned_pb"}))
REGISTRY.add(Entry("mle", O, NoArgs, "exact maximum likelihood (one trajectory per data point)",
                   info={"trains": lambda a: {"pf"}, "needs": "exact"}))
# reverse_kl needs a reward R(x); a model trained from data has none, so the checker
# refuses it there (E611). The reward objectives (tb, db, subtb, fm, vargrad) are in
# gfdsl.library.discrete.
REGISTRY.add(Entry("reverse_kl", O, NoArgs, "KL(P_F || P_B R) through forward samples (needs a reward)",
                   info={"trains": lambda a: {"pf"}, "needs": "reward"}))
REGISTRY.add(Entry("ipf", O, IpfArgs, "iterative proportional fitting (Schrodinger bridge)",
                   info={"trains": lambda a: {"pf", "pb"}, "needs": "learned_pb"}))
