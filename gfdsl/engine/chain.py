"""Chain: the rollouts of a model of explicit steps (diffusion, flows, hierarchical VAEs,
prefixes of an autoregressive model, diffusion samplers) -- a static `Plan` of steps
from the source to the terminal state, each with its forward and backward kernel.

  forward(n, explore, score)   roll P_F from the source        -> Trajectory
  backward(x, k)               roll P_B back from x (k per x)   -> Trajectory, scored
  log_probs(t)                 (log P_F, log P_B) (T, B) of a trajectory

Log-probabilities are (T, B) with T steps in source-to-terminal order. No graph is
walked and nothing is parsed at run time: the plan is a tuple of steps fixed at
lowering, and steps that share a kernel are scored in one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gfdsl.engine.trajectory import Trajectory
from gfdsl.runtime.kernels import DiagNormal


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
    classes: tuple[int, ...] = ()  # per state: K of a cat(K) state (fed to nets one-hot), else 0


class Chain(nn.Module):
    def __init__(self, plan: Plan, kernels: nn.ModuleDict, schedules: nn.ModuleDict, prior: nn.Module | None):
        super().__init__()
        self.plan, self.kernels, self.schedules, self.prior = plan, kernels, schedules, prior

    @property
    def device(self) -> torch.device:
        for b in self.buffers():
            return b.device
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def T(self) -> int:
        return len(self.plan.steps)

    def _pos(self, step: PlanStep, n: int) -> torch.Tensor:
        """The step's position for a batch of n (n,): one value as a stride-0 view, which
        nets with a step embedding read once for the batch (MLP._shared_step)."""
        return torch.full((1,), step.pos, dtype=torch.long, device=self.device).expand(n)

    def _ctx(self, step: PlanStep, states):
        """The context states of a step as one net input (B, sum of widths); categorical
        ones one-hot, as the checker sized the net (StateType.net_width)."""
        if not step.ctx:
            return None
        K = self.plan.classes
        return torch.cat([nn.functional.one_hot(states[c].long(), K[c]).flatten(1).float() if K and K[c]
                          else states[c] for c in step.ctx], 1)

    # -- the source ------------------------------------------------------------------------------

    def source_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prior is None:  # an empty prefix: nothing to sample
            return torch.zeros(n, 0, device=self.device), torch.zeros(n, device=self.device)
        return self.prior.sample(n)

    def source_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.prior is None:
            return torch.zeros(x.shape[0], device=x.device)
        return self.prior.log_prob(x)

    # -- rollouts --------------------------------------------------------------------------------

    def forward(self, n: int, explore: float = 0.0, score: bool = False, rsample: bool = False) -> Trajectory:
        """Roll P_F forward from the source: T + 1 states. With score, log P_F (T, n) of
        the steps taken, kept with the parameters' graph (the states themselves carry no
        gradient unless rsample); log_probs() scores P_B in batched calls. With
        explore > 0, a Gaussian step is drawn with that extra standard deviation
        (kernel.exploration_scale) and scored under P_F itself: off-policy trajectories."""
        x, log_prior = self.source_sample(n)
        states, log_pf = [x], []
        for s in self.plan.steps:
            k = self.kernels[s.fwd]
            i = self._pos(s, n)
            if k.bijective:
                y, ld = k.forward_map(states[s.src], i)
                log_pf.append(-ld)  # density flows through f: log|det J| leaves the trajectory term
            else:
                d = k.dist(states[s.src], i, self._ctx(s, states))
                y = d.rsample() if rsample else _draw(k, d, explore, i)
                if score:
                    log_pf.append(d.log_prob(y))
            states.append(y)
        return Trajectory(states, torch.stack(log_pf) if score else None, log_prior=log_prior)

    def backward(self, x: torch.Tensor, k: int = 1, rsample: bool = False) -> Trajectory:
        """Roll P_B backward from x (B, n), k trajectories per point (batch k * B,
        trajectory-major: row r * B + b is the r-th trajectory of point b), scored."""
        if k > 1:
            x = x.repeat(k, *([1] * (x.dim() - 1)))
        n = x.shape[0]
        T = self.T
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
        log_pf = self.forward_log_probs(states, n, log_pf_bij)
        return Trajectory(states, log_pf, torch.stack(log_pb), self.source_log_prob(states[0]))

    @torch.no_grad()
    def log_weight_stream(self, x: torch.Tensor, k: int = 1) -> torch.Tensor:
        """log P(s_0) + log P_F(tau) - log P_B(tau | x) (k * B,) of k trajectories of P_B
        from each x (trajectory-major, as backward()), accumulated step by step: the
        same draws as backward(), but only the states a later step still reads are kept,
        so memory is that of one step, whatever T (the streamed likelihood). A step whose
        P_F reads context states is scored once those exist; an autoregressive net scores
        every position from the whole sequence (backward(), T = the sequence length)."""
        if any(getattr(self.kernels[s.fwd], "all_positions", False) for s in self.plan.steps):
            return self.backward(x, k).log_weight()
        if k > 1:
            x = x.repeat(k, *([1] * (x.dim() - 1)))
        n, T = x.shape[0], self.T
        ctx = {c for s in self.plan.steps for c in s.ctx}  # states read as context
        states: dict[int, torch.Tensor] = {T: x}
        w = torch.zeros(n, device=x.device)
        later = []  # steps whose P_F reads context: scored after the walk
        for j in range(T - 1, -1, -1):
            s = self.plan.steps[j]
            i = self._pos(s, n)
            y = states[s.dst]
            kf = self.kernels[s.fwd]
            if s.bwd is None:
                xs, ld = kf.inverse_map(y, i)
                w += ld  # log P_F of a bijection's step (log P_B = 0: a Dirac)
            else:
                d = self.kernels[s.bwd].dist(y, i)
                xs = d.sample()
                w -= d.log_prob(xs)
                if s.ctx:
                    later.append(s)
                elif kf.bijective:
                    w += kf.inverse_map(y, i)[1]
                else:
                    w += kf.dist(xs, i).log_prob(y)
            states[s.src] = xs
            if s.dst not in ctx and not any(s.dst in (t.src, t.dst) for t in later):
                del states[s.dst]  # no later step reads it: free it
        for s in later:
            w += self.kernels[s.fwd].dist(states[s.src], self._pos(s, n), self._ctx(s, states)).log_prob(states[s.dst])
        return w + self.source_log_prob(states[0])

    def log_probs(self, t: Trajectory) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P_F, log P_B) (T, B) of a trajectory: what it kept, the rest scored."""
        n = t.batch
        lpf = t.log_pf if t.log_pf is not None else self.forward_log_probs(t.states, n, {})
        lpb = t.log_pb if t.log_pb is not None else self.backward_log_probs(t.states, n)
        return lpf, lpb

    # -- scoring -----------------------------------------------------------------------------------

    def forward_log_probs(self, states, n, known: dict[int, torch.Tensor]) -> torch.Tensor:
        out: list[torch.Tensor | None] = [None] * len(self.plan.steps)
        for j, v in known.items():
            out[j] = v
        for group in self.plan.fwd_groups:
            group = tuple(j for j in group if out[j] is None)
            if not group:
                continue
            s0 = self.plan.steps[group[0]]
            k = self.kernels[s0.fwd]
            if k.bijective:  # a flow's forward map, scored by its inverse (log|det| of the step)
                for j in group:
                    s = self.plan.steps[j]
                    out[j] = k.inverse_map(states[s.dst], self._pos(s, n))[1]
                continue
            if getattr(k, "all_positions", False) and len(group) == len(self.plan.steps):
                # an autoregressive net gives every step's logits from the full sequence at once
                lp = k.log_probs_all(states[-1])  # (L, n), position j = step j
                for j in group:
                    out[j] = lp[self.plan.steps[j].pos]
                continue
            self._score(k, group, states, n, "src", "dst", out)
        return torch.stack(out)

    def backward_log_probs(self, states, n) -> torch.Tensor:
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

    def log_flows(self, t: Trajectory, log_r: torch.Tensor, net: nn.Module, looking=None):
        """log F at positions 0..T (T + 1, B) for db and subtb: the flow net on each state
        and its position (one batched call), R(x) at the terminal state; every position
        is a node of every trajectory. Forward-looking (`looking` the target's log R):
        log F(x_j) = net(x_j) + (j / T) log R(x_j), the energy interpolated along the
        chain from 0 at the source to log R at the end."""
        T, n = self.T, t.batch
        xs = torch.cat([t.states[j] for j in range(T)])
        ii = torch.cat([self._pos(s, n) for s in self.plan.steps])  # the step leaving state j
        f = net(xs.float(), (ii + 1).float())[:, 0].view(T, n)
        if looking is not None:
            frac = torch.arange(T, device=f.device, dtype=f.dtype)[:, None] / T  # t_j = j / T (T, 1)
            f = f + frac * looking(xs).view(T, n)
        return torch.cat([f, log_r[None]]), None

    @property
    def exact(self) -> bool:
        """Each terminal state has one trajectory (every backward kernel deterministic)."""
        for s in self.plan.steps:
            if s.bwd is not None and not self.kernels[s.bwd].deterministic:
                return False
        return True


def _draw(k, d, explore: float, i: torch.Tensor) -> torch.Tensor:
    """A sample of d, or -- exploring -- of d with its Gaussian widened by the kernel's
    exploration scale (added in quadrature to each coordinate's standard deviation)."""
    if explore > 0 and isinstance(d, DiagNormal):
        extra = k.exploration_scale(explore, i)  # (B, 1) or a float
        scale = (d.scale ** 2 + extra ** 2) ** 0.5
        with torch.no_grad():
            return d.loc + scale * torch.randn_like(d.loc)
    return d.sample()
