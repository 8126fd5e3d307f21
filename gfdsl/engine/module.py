"""GfnModel: the one compiled module of every spec. A GFlowNet is states, steps with a
forward policy P_F and a backward policy P_B, and a target; its `space` is how the
steps are rolled out -- a static chain of kernel steps (gfdsl.engine.chain) or a
branching action space (gfdsl.engine.branching) -- and everything else is shared:

  sample(n)            P_F from the source, scored                    -> Trajectory
  infer(x, k)          P_B back from terminal states x, scored         -> Trajectory
  log_probs(t)         (log P_F, log P_B) (T, B) along a trajectory
  log_reward(x)        log R(x) of the target (None for a model of data alone)
  log_Z                a learned log partition function, where an objective needs one
  log_likelihood(x, k) log p(x) ~ logsumexp_k(log P_F(tau_k) - log P_B(tau_k|x)) - log k
  loss(batch, step)    the spec's objective (gfdsl.engine.objectives)

A posterior (a data set and a reward, `... then rtb`) also holds `prior_chain`: the
forward kernels over a frozen copy of the nets, filled from the trained prior at the
end of the prior stage (freeze_prior) or loaded from a run (`gfdsl run --prior RUN`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gfdsl.engine.objectives import Objective
from gfdsl.engine.offpolicy import Replay
from gfdsl.engine.trajectory import Trajectory
from gfdsl.runtime.conditions import Conditions, LogZ


class GfnModel(nn.Module):
    def __init__(self, attrs: dict, nets: nn.ModuleDict, space: nn.Module, reward: nn.Module | None,
                 data_shape: tuple[int, ...], data_dtype: str, conditions: Conditions | None = None):
        super().__init__()
        self.spec = attrs  # plain data from the IR (name, objective, train, ...)
        self.nets = nets  # first, so that shared nets are named nets.* in checkpoints
        self.space = space
        self.reward = reward
        self.data_shape, self.data_dtype = tuple(data_shape), data_dtype
        terms = {t["term"] for t in attrs["objective"] + attrs["prior_objective"]}
        self.conditions = conditions or Conditions({}, {})
        # log Z, or log Z(c) of a conditional model (a net of its conditions, B or 1 rows)
        self.log_Z = nn.Parameter(torch.zeros(())) if terms & {"tb", "rtb"} and not self.conditions else None
        self.log_Z_net = LogZ(self.conditions) if terms & {"tb", "rtb"} and self.conditions else None
        space.conditions = self.conditions  # (the branching rollouts read how many rows it has)
        train = attrs["train"]
        self.replay = None
        self.local_search: dict | None = None  # MALA rounds on the buffer (gfdsl.engine.localsearch)
        self.exploration = (float(train["exploration"]), int(train["exploration_steps"]))
        self.data_fraction = float(train["data_fraction"])  # a posterior: batch share drawn back from data
        self.prior_nets = self.prior_chain = None
        self.health_slots = _slots(space)
        self.objective: Objective | None = None  # set by lowering

    def with_replay(self, template: torch.Tensor) -> None:
        train = self.spec["train"]
        self.replay = Replay(int(train["replay"]), float(train["replay_fraction"]), template,
                             train["replay_priority"], float(train["rank_weight"]), float(train["ld_step"]))
        if train["local_search"]:
            self.local_search = {"steps": int(train["local_search"]), "every": int(train["local_search_every"]),
                                 "batch": int(train["local_search_batch"] or train["batch"])}

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def given(self, values: dict | None):
        """Context: run the model with these condition values (gfdsl.runtime.conditions)."""
        return self.conditions.given(values)

    def log_z(self) -> torch.Tensor | None:
        """The learned log Z: a scalar, or log Z(c) (B,) / (1,) of the current conditions."""
        return self.log_Z_net() if self.log_Z_net is not None else self.log_Z

    @property
    def log_z_params(self) -> list[nn.Parameter]:
        return [self.log_Z] if self.log_Z is not None else \
            list(self.log_Z_net.parameters()) if self.log_Z_net is not None else []

    # -- the rollout API -----------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int) -> Trajectory:
        """n trajectories of P_F from the source, with log P_F and log P_B (T, n)."""
        t = self.space.forward(n, score=True)
        t.log_pf, t.log_pb = self.space.log_probs(t)
        return t

    def infer(self, x: torch.Tensor, k: int = 1, rsample: bool = False) -> Trajectory:
        """P_B from terminal states x (B, n), k trajectories per point (batch k * B,
        trajectory-major: row r * B + b is the r-th trajectory of point b), scored."""
        if hasattr(self.space, "plan"):
            return self.space.backward(x, k, rsample)
        t = self.space.backward(x.repeat(k, 1) if k > 1 else x)
        t.log_pf, t.log_pb = self.space.log_probs(t)
        return t

    def log_probs(self, t: Trajectory) -> tuple[torch.Tensor, torch.Tensor]:
        return self.space.log_probs(t)

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reward(x)

    # -- likelihood and loss -------------------------------------------------------------------

    @property
    def exact(self) -> bool:
        """Each data point has one trajectory (every backward kernel deterministic)."""
        return getattr(self.space, "exact", False)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1, chunk: int = 4096, progress=None) -> torch.Tensor:
        """Per-example log p(x) (B,): exact where each x has one trajectory (k is then 1),
        else the importance-weighted bound with k backward trajectories (Burda et al. 2016).

        Bounded memory: points go in chunks of about `chunk` trajectories, and a chain's
        log-weights are accumulated step by step (Chain.log_weight_stream), so the peak is
        set by the chunk, not by T, the number of points or k. Where k alone exceeds the
        chunk, a point's k trajectories are scored in slices and combined by logsumexp.
        progress(done, total) is called after each chunk."""
        if self.exact:
            k = 1
        stream = getattr(self.space, "log_weight_stream", None)
        per, ks = max(1, chunk // k), min(k, chunk)
        out = []
        for a in range(0, x.shape[0], per):
            xb = x[a:a + per].to(self.device)
            parts = []
            for r in range(0, k, ks):  # slices of a point's k trajectories
                kk = min(ks, k - r)
                w = stream(xb, kk) if stream is not None else self.infer(xb, kk).log_weight()
                parts.append(torch.logsumexp(w.view(kk, -1), 0))
            out.append(torch.logsumexp(torch.stack(parts), 0) - math.log(k))
            if progress is not None:
                progress(min(a + per, x.shape[0]), x.shape[0])
        return torch.cat(out)

    def loss(self, batch: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The spec's objective on a batch (data rows, or B empty rows for a reward):
        (scalar loss, {term: value}) without syncing."""
        return self.objective(self, batch, step)

    # DistributedDataParallel calls forward(): it is the loss
    forward = loss

    # -- a posterior's prior ----------------------------------------------------------------------

    @torch.no_grad()
    def freeze_prior(self) -> None:
        """The end of a posterior's prior stage: the frozen prior takes the trained nets."""
        for name, net in self.prior_nets.items():
            net.load_state_dict(self.nets[name].state_dict())

    @torch.no_grad()
    def exact_distribution(self) -> dict:
        """An enumerable action space's exact terminating distribution against R / Z:
        exact L1, total variation, KL, log Z (gfdsl.engine.branching.Branching.exact)."""
        return self.space.exact(self.log_z_model(), self.reward)

    @torch.no_grad()
    def log_z_model(self) -> float | None:
        """The model's own estimate of log Z, where its parametrisation has one: the
        learned log Z, the state flow of the start (db, subtb), or the edge flows out of
        the start of an action space (fm)."""
        if self.log_Z is not None or self.log_Z_net is not None:
            return float(self.log_z().reshape(-1)[0])
        flow = next((t["args"]["flow"] for t in self.spec["objective"] if "flow" in t["args"]), None)
        s0 = self.space.forward(1).states[0]
        if flow is not None:
            net = self.nets[flow]
            if hasattr(self.space, "plan"):  # the flow of the source state, at the first step's time
                return float(net(s0.float(), torch.ones(1, device=s0.device))[0, 0])
            return float(self.space.log_flow(s0, net)[0])
        if any(t["term"] == "fm" for t in self.spec["objective"]):
            sp = self.space.space
            logits = self.nets[self.space.pf](sp.encode(s0))
            return float(torch.logsumexp(logits.masked_fill(~sp.forward_mask(s0), float("-inf")), 1)[0])
        return None


def _slots(space) -> dict:
    """Where Objective.health records each log-probability: the source's prior, P_F and
    P_B of each step of a chain (one slot each for an action space), the target."""
    if hasattr(space, "plan"):
        T = len(space.plan.steps)
        return {"prior": slice(0, 1), "pf": slice(1, 1 + T), "pb": slice(1 + T, 1 + 2 * T),
                "target": slice(1 + 2 * T, 2 + 2 * T), "size": 2 + 2 * T}
    return {"pf": slice(0, 1), "pb": slice(1, 2), "target": slice(2, 3), "size": 3}


def param_groups(model: GfnModel, lr: float, lr_logz: float) -> list[dict]:
    """Nets at the run's learning rate, log Z at lr_logz (Malkin et al. 2022 train log Z
    about 100x faster than the policy)."""
    z = {id(p) for p in model.log_z_params}
    rest = [p for p in model.parameters() if id(p) not in z and p.requires_grad]
    groups = [{"params": rest, "lr": lr}]
    if z:
        groups.append({"params": model.log_z_params, "lr": lr_logz})
    return groups


__all__ = ["GfnModel", "param_groups"]
