"""GfnModel: the compiled model. A static `Plan` of steps from source to data, nets and
kernels in ModuleDicts, and the rollouts every objective is built from.

  sample(n)            roll P_F forward from the source prior      -> Trajectory
  infer(x, k)          roll P_B backward from data (k per point)  -> Trajectory
  log_likelihood(x, k) log p(x) ~ logsumexp_k(log P_F(tau_k) - log P_B(tau_k|x)) - log k
  loss(batch)          the spec's objective (gfdsl.runtime.objectives)

Trajectory log-probabilities have shape (T, B) with T steps in source-to-data order. No
graph is walked and nothing is parsed at run time: the plan is a tuple of steps fixed at
lowering, and steps that share a kernel are evaluated in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PlanStep:
    src: int  # index of the source state in Trajectory.states
    dst: int
    fwd: str  # ModuleDict key of the forward kernel
    bwd: str | None  # None: the inverse of the bijective forward kernel
    pos: int  # 0-based position along its index range (schedule index)
    ctx: tuple[int, ...] = ()  # context states fed to the forward kernel
    span: tuple = ()


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlanStep, ...]
    names: tuple[str, ...]  # state names in trajectory order, source first
    fwd_groups: tuple[tuple[int, ...], ...]  # steps sharing a forward kernel (batched eval)
    bwd_groups: tuple[tuple[int, ...], ...]


@dataclass
class Trajectory:
    states: list[torch.Tensor]  # len T + 1, source first, each (B, n_j)
    log_pf: torch.Tensor  # (T, B)
    log_pb: torch.Tensor  # (T, B)
    log_prior: torch.Tensor  # (B,)

    def log_weight(self) -> torch.Tensor:
        """log P_F(tau) - log P_B(tau | x), prior included: (B,)."""
        return self.log_prior + self.log_pf.sum(0) - self.log_pb.sum(0)


class GfnModel(nn.Module):
    def __init__(self, graph_attrs: dict, plan: Plan, nets: nn.ModuleDict, kernels: nn.ModuleDict,
                 schedules: nn.ModuleDict, prior: nn.Module | None, data_shape: tuple[int, ...], data_dtype: str):
        super().__init__()
        self.spec = graph_attrs  # plain data from the IR (name, objective, train, ...)
        self.plan = plan
        self.nets = nets
        self.kernels = kernels
        self.schedules = schedules
        self.prior = prior
        self.data_shape = tuple(data_shape)
        self.data_dtype = data_dtype
        self.log_Z = None  # a learned log-partition function, if an objective asks for one
        self.objective = None  # set by lower(): gfdsl.runtime.objectives.Objective

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # -- rollouts -------------------------------------------------------------------------

    def _pos(self, step: PlanStep, n: int) -> torch.Tensor:
        return torch.full((n,), step.pos, dtype=torch.long, device=self.device)

    def _ctx(self, step: PlanStep, states):
        return torch.cat([states[c] for c in step.ctx], 1) if step.ctx else None

    def source_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prior is None:  # an empty prefix: nothing to sample
            return torch.zeros(n, 0, device=self.device), torch.zeros(n, device=self.device)
        d = self.prior.dist(n)
        x = d.sample()
        return x, d.log_prob(x)

    def source_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.prior is None:
            return torch.zeros(x.shape[0], device=x.device)
        return self.prior.log_prob(x)

    def sample(self, n: int) -> Trajectory:
        """Roll P_F forward from the source: (T + 1) states, log P_F and log P_B (T, n)."""
        x, log_prior = self.source_sample(n)
        states = [x]
        log_pf = []
        for s in self.plan.steps:
            k = self.kernels[s.fwd]
            i = self._pos(s, n)
            if k.bijective:
                y, ld = k.forward_map(states[s.src], i)
                log_pf.append(-ld)  # density flows through f: log|det J| leaves the trajectory term
            else:
                d = k.dist(states[s.src], i, self._ctx(s, states))
                y = d.sample()
                log_pf.append(d.log_prob(y))
            states.append(y)
        log_pb = self._backward_log_probs(states, n)
        return Trajectory(states, torch.stack(log_pf), log_pb, log_prior)

    def infer(self, x: torch.Tensor, k: int = 1, rsample: bool = False) -> Trajectory:
        """Roll P_B backward from data x (B, n), k trajectories per point (batch k * B,
        trajectory-major: row r * B + b is the r-th trajectory of point b)."""
        if k > 1:
            x = x.repeat(k, *([1] * (x.dim() - 1)))
        n = x.shape[0]
        T = len(self.plan.steps)
        states: list[torch.Tensor | None] = [None] * (T + 1)
        states[-1] = x
        log_pb: list[torch.Tensor | None] = [None] * T
        log_pf_bij: dict[int, torch.Tensor] = {}
        zero = None
        for j in range(T - 1, -1, -1):
            s = self.plan.steps[j]
            i = self._pos(s, n)
            if s.bwd is None:
                xs, ld = self.kernels[s.fwd].inverse_map(states[s.dst], i)
                log_pf_bij[j] = ld  # = -log|det J_f(xs)|
                if zero is None:
                    zero = torch.zeros(n, device=x.device)
                log_pb[j] = zero  # a Dirac: log P_B = 0
            else:
                d = self.kernels[s.bwd].dist(states[s.dst], i)
                xs = d.rsample() if rsample and d.has_rsample else d.sample()
                log_pb[j] = d.log_prob(xs)
            states[s.src] = xs
        log_pf = self._forward_log_probs(states, n, log_pf_bij)
        return Trajectory(states, log_pf, torch.stack(log_pb), self.source_log_prob(states[0]))

    def _forward_log_probs(self, states, n, known: dict[int, torch.Tensor]) -> torch.Tensor:
        out: list[torch.Tensor | None] = [None] * len(self.plan.steps)
        for j, v in known.items():
            out[j] = v
        for group in self.plan.fwd_groups:
            group = tuple(j for j in group if out[j] is None)
            if not group:
                continue
            s0 = self.plan.steps[group[0]]
            k = self.kernels[s0.fwd]
            if getattr(k, "all_positions", False) and len(group) == len(self.plan.steps):
                # an autoregressive net gives every step's logits from the full sequence at once
                lp = k.log_probs_all(states[-1])  # (L, n), position j = step j
                for j in group:
                    out[j] = lp[self.plan.steps[j].pos]
                continue
            self._score(k, group, states, n, "src", "dst", out)
        return torch.stack(out)

    def _backward_log_probs(self, states, n) -> torch.Tensor:
        out: list[torch.Tensor | None] = [None] * len(self.plan.steps)
        for group in self.plan.bwd_groups:
            if self.plan.steps[group[0]].bwd is None:  # inverse of a bijection: a Dirac
                for j in group:
                    out[j] = torch.zeros(n, device=self.device)
                continue
            self._score(self.kernels[self.plan.steps[group[0]].bwd], group, states, n, "dst", "src", out)
        return torch.stack(out)

    def _score(self, k, group, states, n, reads: str, scores: str, out: list) -> None:
        """log-probabilities of a group of steps sharing kernel k into out[j] (n,): the
        kernel reads state `reads` of each step (src for P_F, dst for P_B) and scores state
        `scores`. One batched call of len(group) * n rows when the states' shapes agree;
        one call per step otherwise (prefixes of different lengths). Context inputs feed
        forward kernels only."""
        steps = [self.plan.steps[j] for j in group]
        ctx = (lambda s: self._ctx(s, states)) if reads == "src" else (lambda s: None)
        if len(steps) == 1 or any(states[getattr(s, reads)].shape != states[getattr(steps[0], reads)].shape
                                  for s in steps):
            for j, s in zip(group, steps):
                out[j] = k.dist(states[getattr(s, reads)], self._pos(s, n), ctx(s)).log_prob(states[getattr(s, scores)])
            return
        xs = torch.cat([states[getattr(s, reads)] for s in steps])
        ys = torch.cat([states[getattr(s, scores)] for s in steps])
        ii = torch.cat([self._pos(s, n) for s in steps])
        cs = torch.cat([ctx(s) for s in steps]) if reads == "src" and steps[0].ctx else None
        lp = k.dist(xs, ii, cs).log_prob(ys).view(len(steps), n)
        for r, j in enumerate(group):
            out[j] = lp[r]

    # -- likelihood and loss ----------------------------------------------------------------

    @property
    def exact(self) -> bool:
        """Each data point has one trajectory (every backward kernel deterministic)."""
        for s in self.plan.steps:
            if s.bwd is not None and not self.kernels[s.bwd].deterministic:
                return False
        return True

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1, chunk: int = 4096) -> torch.Tensor:
        """Per-example log p(x) (B,): exact where each x has one trajectory (k is then 1),
        else the importance-weighted bound with k backward trajectories (Burda et al. 2016)."""
        if self.exact:
            k = 1
        per = max(1, chunk // k)
        out = []
        for a in range(0, x.shape[0], per):
            xb = x[a:a + per].to(self.device)
            w = self.infer(xb, k).log_weight().view(k, -1)  # (k, b)
            out.append(torch.logsumexp(w, 0) - math.log(k))
        return torch.cat(out)

    def loss(self, batch: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The spec's objective on a batch: (scalar loss, {term: value}) without syncing."""
        return self.objective(self, batch, step)

    # DistributedDataParallel calls forward(): it is the loss
    forward = loss
