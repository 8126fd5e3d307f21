"""Off-policy training, one mechanism for every model: what draws the training
trajectories is a behaviour policy, not necessarily P_F, and the objectives score them
under the current P_F and P_B whatever drew them.

  behaviour  an action space's epsilon / temperature mixture; a chain's exploration
             noise added to its Gaussian steps, decaying linearly over
             `exploration_steps` (Sendera et al. 2024's exploration schedule)
  replay     a FIFO buffer of terminal objects and their log R (buffers, so checkpoints
             keep it); a share of each batch is drawn backward by P_B from buffered objects
  data       a posterior's share of each batch drawn backward by P_B from data points
  draw()     the training batch: behaviour rollouts joined by backward trajectories from
             the buffer and from data, each trajectory scored once by the objective

Whether anything is rescored is decided statically: exploration keeps P_F's own
log-probability of what it drew (no second pass); replayed trajectories are rescored.
"""

from __future__ import annotations

import torch
from torch import nn

from gfdsl.engine.trajectory import Trajectory, cat


class Replay(nn.Module):
    """A ring buffer of `capacity` terminal states shaped like `template` (1, n), with
    each one's log R."""

    def __init__(self, capacity: int, fraction: float, template: torch.Tensor):
        super().__init__()
        self.capacity, self.fraction = capacity, fraction
        self.register_buffer("x", template.expand(capacity, *template.shape[1:]).clone())
        self.register_buffer("log_r", torch.full((capacity,), float("-inf")))
        self.register_buffer("n", torch.zeros((), dtype=torch.long))  # objects added so far

    @torch.no_grad()
    def add(self, x: torch.Tensor, log_r: torch.Tensor) -> None:
        n = int(self.n)
        pos = (n + torch.arange(x.shape[0])) % self.capacity
        self.x[pos] = x.detach().to(self.x.device, self.x.dtype)
        self.log_r[pos] = log_r.detach().to(self.log_r.device, self.log_r.dtype)
        self.n += x.shape[0]

    def sample(self, k: int, have: int) -> torch.Tensor:
        """k objects drawn uniformly from the first min(have, capacity) slots."""
        idx = torch.randint(0, min(have, self.capacity), (k,), device=self.x.device)
        return self.x[idx]


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
    for x in ([rp.sample(n_r, have)] if n_r else []) + ([data[:n_d]] if n_d else []):
        r = model.space.backward(x.to(model.device))
        t = cat(t, Trajectory(r.states, log_prior=r.log_prior, actions=r.actions))
    return t
