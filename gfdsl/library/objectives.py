"""Training objectives: registered terms that compose linearly, each fitting one target.

`objective = elbo + 0.25 * tbc(k = 2)` is a weighted sum of registered terms. Each entry
says which target it trains from (`target`):

  data       likelihood terms read backward trajectories from data points: elbo, mle,
             tbc, ipf; cfm regresses a velocity on paths from the source to data points
  reward     balance terms read trajectories against log R(x): tb, db, subtb, vargrad,
             fm, reverse_kl
  posterior  rtb reads trajectories of the posterior against a frozen data-trained prior
             and the reward: a model with both a data set and a reward, staged
             `<data objective> then rtb`

which policies its gradient trains (`trains`, given its arguments) and what else the
model must offer (`needs`): a learned backward policy, one trajectory per data point, an
action space (edge flows), reparameterised forward kernels, the source's density.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gfdsl.library.registry import REGISTRY, Args, Entry, NetRef, PosInt


class ElboArgs(Args):
    """elbo(weighting = "full", train = "pf"): E_{P_B(tau|x)}[log P_F(tau) - log P_B(tau|x)].

    weighting "simple" is Ho et al.'s L_simple reweighting for DDPM denoisers, "hybrid"
    Nichol & Dhariwal's L_simple + lamda L_vlb (it trains a learned variance);
    train "pf" detaches log P_B (the design's default), "both" trains P_B too
    (reparameterised, as in a VAE).
    """

    weighting: Literal["full", "simple", "hybrid"] = "full"
    train: Literal["pf", "both"] = "pf"
    lamda: float = Field(default=0.001, ge=0, le=1000, description=(
        'weight of L_vlb (T L_t in nats per value) in weighting = "hybrid"'))


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


class DbArgs(Args):
    """db(flow, forward_looking = false): detailed balance (Bengio et al. 2023) with a
    learned state flow log F(s); forward-looking, log F(x_k) = log F~(x_k) + t_k log R(x_k)
    on a chain of real states (Pan et al. 2023; Zhang et al. 2023, DGFS), so the net
    learns only a correction to the interpolated energy."""

    flow: NetRef
    forward_looking: bool = Field(default=False, description="add t_k log R(x_k) to each intermediate flow")


class SubTbArgs(DbArgs):
    """subtb(flow, lamda = 0.9, forward_looking = false): sub-trajectory balance (Madan et
    al. 2023), every sub-trajectory weighted by lamda^length."""

    lamda: float = Field(default=0.9, gt=0, le=1)


class CfmArgs(Args):
    """cfm(sigma = 0, coupling = "independent"): conditional flow matching of an ode_flow
    chain (Lipman et al. 2023); sigma = 0 with the independent coupling is rectified flow
    (Liu et al. 2023), coupling "ot" the minibatch optimal-transport pairing (Tong et al. 2024)."""

    sigma: float = Field(default=0.0, ge=0, le=100, description="std of the noise around each straight path")
    coupling: Literal["independent", "ot"] = Field(default="independent", description=(
        "how source draws pair with data points: at random, or by the batch's exact OT assignment"))


def _info(target: str, trains, *needs: str) -> dict:
    return {"target": target, "trains": trains, "needs": needs}


def _both(a) -> set[str]:
    return {"pf", "pb"}


O = "objective"
REGISTRY.add(Entry("elbo", O, ElboArgs, "evidence lower bound with backward trajectories from data",
                   info=_info("data", lambda a: {"pf"} if a.train == "pf" else {"pf", "pb"}, "source_density")))
REGISTRY.add(Entry("tbc", O, TbcArgs, "trajectory-balance consistency regulariser (MLE-GFN)",
                   info=_info("data", lambda a: {"pb"} if a.train == "pb" else {"pf", "pb"}, "learned_pb",
                              "source_density")))
REGISTRY.add(Entry("mle", O, NoArgs, "exact maximum likelihood (one trajectory per data point)",
                   info=_info("data", lambda a: {"pf"}, "exact", "source_density")))
REGISTRY.add(Entry("ipf", O, IpfArgs, "iterative proportional fitting (Schrodinger bridge)",
                   info=_info("data", lambda a: {"pf", "pb"}, "learned_pb")))
REGISTRY.add(Entry("cfm", O, CfmArgs, "conditional flow matching of an ode_flow velocity on paths from the source to data",
                   info=_info("data", lambda a: {"pf"}, "velocity")))
REGISTRY.add(Entry("tb", O, NoArgs, "trajectory balance with a learned log Z (needs a reward)",
                   info=_info("reward", _both)))
REGISTRY.add(Entry("vargrad", O, NoArgs, "log Z-free trajectory balance: batch variance (needs a reward)",
                   info=_info("reward", _both)))
REGISTRY.add(Entry("db", O, DbArgs, "detailed balance with a learned state flow (needs a reward)",
                   info=_info("reward", _both)))
REGISTRY.add(Entry("subtb", O, SubTbArgs, "sub-trajectory balance, lamda-weighted (needs a reward)",
                   info=_info("reward", _both)))
REGISTRY.add(Entry("fm", O, NoArgs, "flow matching on edge flows exp(logits) (needs a reward and actions; P_B implied)",
                   info=_info("reward", lambda a: {"pf"}, "actions")))
REGISTRY.add(Entry("reverse_kl", O, NoArgs, "KL(P_F || P_B R / Z) through reparameterised forward samples (PIS)",
                   info=_info("reward", lambda a: {"pf"}, "rsample")))
REGISTRY.add(Entry("pis", O, NoArgs, "the Path Integral Sampler's objective (Zhang & Chen 2022): reverse_kl by its name",
                   info=_info("reward", lambda a: {"pf"}, "rsample")))
REGISTRY.add(Entry("rtb", O, NoArgs, "relative trajectory balance: fine-tune a data-trained prior towards prior(x) R(x)",
                   info=_info("posterior", lambda a: {"pf"})))
