"""Off-policy training, one mechanism for every model: what draws the training
trajectories is a behaviour policy, not necessarily P_F, and the objectives score them
under the current P_F and P_B whatever drew them.

  behaviour  an action space's epsilon / temperature mixture; a chain's exploration
             noise added to its Gaussian steps, decaying linearly over
             `exploration_steps` (Sendera et al. 2024's exploration schedule)
  replay     a FIFO buffer of terminal objects and their log R (buffers, so checkpoints
             keep it), drawn uniformly or by rank of log R; a share of each batch is
             drawn backward by P_B from buffered objects
  local      search: every few steps, buffered states moved by MALA towards R and added
             back (gfdsl.engine.localsearch)
  data       a posterior's share of each batch drawn backward by P_B from data points
  draw()     the training batch: behaviour rollouts joined by backward trajectories from
             the buffer and from data, each trajectory scored once by the objective

Whether anything is rescored is decided statically: exploration keeps P_F's own
log-probability of what it drew (no second pass); replayed trajectories are rescored.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gfdsl.engine import localsearch
from gfdsl.engine.trajectory import Trajectory, cat


class Replay(nn.Module):
    """A ring buffer of `capacity` terminal states shaped like `template` (1, n), with
    each one's log R; drawn uniformly or by rank of log R. The local search's MALA step
    size lives here too (a buffer, so a resumed run continues with it)."""

    def __init__(self, capacity: int, fraction: float, template: torch.Tensor, priority: str = "uniform",
                 rank_weight: float = 0.01, ld_step: float = 0.1):
        super().__init__()
        self.capacity, self.fraction = capacity, fraction
        self.priority, self.rank_weight = priority, rank_weight
        self.register_buffer("x", template.expand(capacity, *template.shape[1:]).clone())
        self.register_buffer("log_r", torch.full((capacity,), float("-inf")))
        self.register_buffer("n", torch.zeros((), dtype=torch.long))  # objects added so far
        self.register_buffer("ld_step", torch.tensor(float(ld_step)))

    @torch.no_grad()
    def add(self, x: torch.Tensor, log_r: torch.Tensor) -> None:
        n = int(self.n)
        pos = (n + torch.arange(x.shape[0])) % self.capacity
        self.x[pos] = x.detach().to(self.x.device, self.x.dtype)
        self.log_r[pos] = log_r.detach().to(self.log_r.device, self.log_r.dtype)
        self.n += x.shape[0]

    def sample(self, k: int, have: int) -> torch.Tensor:
        """k objects from the first m = min(have, capacity) slots: uniformly, or by rank
        (rank 0 the highest log R) with P(rank r) proportional to 1 / (c m + r), c the
        rank weight -- drawn by inverting the continuous form of that law's CDF,
        r = c m ((1 + 1 / c)^u - 1), u ~ U(0, 1): one sort of m values, no m-way
        multinomial."""
        m = min(have, self.capacity)
        dev = self.x.device
        if self.priority != "rank":
            return self.x[torch.randint(0, m, (k,), device=dev)]
        order = torch.argsort(self.log_r[:m], descending=True)
        c = self.rank_weight
        u = torch.rand(k, device=dev, dtype=torch.float64)
        r = (c * m * torch.expm1(u * math.log1p(1 / c))).long().clamp_(0, m - 1)
        return self.x[order[r]]


def behaviour(model, step: int) -> float:
    """How far the training rollout strays from P_F at 0-based `step` (0: on-policy)."""
    sp = model.space
    if hasattr(sp, "explores"):  # an action space: its epsilon / temperature mixture, or none
        return 1.0 if sp.explores else 0.0
    std, span = model.exploration
    if not std:
        return 0.0
    return std * max(0.0, 1.0 - step / span) if span else std


def draw(model, B: int, step: int, score: bool, data: torch.Tensor | None = None) -> Trajectory:
    """The training batch of B trajectories: behaviour rollouts, scored as they are
    drawn where that is cheaper than rescoring (score), plus, with replay, trajectories
    drawn backward from buffered terminal states and, for a posterior with a data share,
    from the batch's data points (then everything is rescored)."""
    rp = model.replay
    n_r = have = 0
    if rp is not None:
        have = int(rp.n)  # one host read per step, only with replay
        n_r = min(int(round(rp.fraction * B)), have, B - 1)
    n_d = min(int(round(model.data_fraction * B)), B - 1 - n_r) if data is not None and data.shape[1] else 0
    t = model.space.forward(B - n_r - n_d, explore=behaviour(model, step), score=score and not (n_r or n_d))
    if rp is not None:
        rp.add(t.terminal, model.log_reward(t.terminal))
        localsearch.local_search(model, step)
    for x in ([rp.sample(n_r, have)] if n_r else []) + ([data[:n_d]] if n_d else []):
        r = model.space.backward(x.to(model.device))
        t = cat(t, Trajectory(r.states, log_prior=r.log_prior, actions=r.actions))
    return t
