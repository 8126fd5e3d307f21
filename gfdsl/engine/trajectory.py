"""Trajectories: what every rollout returns and every objective reads.

A trajectory tau = (s_0 -> s_1 -> ... -> s_T = x) of a batch of B rows:

  states     T + 1 tensors (B, n_j), source first (a chain: shapes may differ per
             step, as for prefixes), or one tensor (T + 1, B, n) (an action space,
             padded: a row that exited repeats its last state)
  log_pf     log P_F(s_{t+1} | s_t), (T, B), 0 on padding; None until scored
  log_pb     log P_B(s_t | s_{t+1}), (T, B), 0 on padding and for exit
  log_prior  log P(s_0) (B,) of the source; None where the start is fixed
  actions    (T, B) for action spaces: move index, M for exit, -1 after it
  kept       a compact rollout's kept forward pass of P_F (gfdsl.engine.rollout)

`log_weight()` is log P(s_0) + sum log P_F - sum log P_B, the quantity every balance
and likelihood objective is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Kept:
    """A compact rollout's forward pass of P_F, kept for scoring without a second pass:
    the distinct states it evaluated (R, n), the net's output (R, A) and hidden layers,
    and the row of each transition (T * B,) into them."""

    states: torch.Tensor
    out: torch.Tensor
    hidden: list
    row: torch.Tensor


@dataclass
class Trajectory:
    states: list | torch.Tensor
    log_pf: torch.Tensor | None = None
    log_pb: torch.Tensor | None = None
    log_prior: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    kept: Kept | None = None

    @property
    def terminal(self) -> torch.Tensor:
        """x = the last state (B, n)."""
        return self.states[-1]

    @property
    def batch(self) -> int:
        return self.states[-1].shape[0]

    @property
    def valid(self) -> torch.Tensor | None:
        """(T, B) bool: which transitions are real (None: all of them)."""
        return None if self.actions is None else self.actions >= 0

    def log_weight(self) -> torch.Tensor:
        """log P_F(tau) - log P_B(tau | x), the source's prior included: (B,)."""
        w = self.log_pf.sum(0) - self.log_pb.sum(0)
        return w if self.log_prior is None else self.log_prior + w


def pad(t: Trajectory, T: int) -> Trajectory:
    """An action-space trajectory padded to T transitions (exited rows stay put)."""
    extra = T - t.actions.shape[0]
    if extra <= 0:
        return t
    st = torch.cat([t.states, t.states[-1:].expand(extra, -1, -1)])
    ac = torch.cat([t.actions, torch.full_like(t.actions[:1], -1).expand(extra, -1)])
    return Trajectory(st, actions=ac)


def cat(a: Trajectory, b: Trajectory) -> Trajectory:
    """Two unscored batches of trajectories as one (B_a + B_b rows)."""
    if a.actions is not None:
        T = max(a.actions.shape[0], b.actions.shape[0])
        a, b = pad(a, T), pad(b, T)
        return Trajectory(torch.cat([a.states, b.states], 1), actions=torch.cat([a.actions, b.actions], 1))
    prior = None if a.log_prior is None else torch.cat([a.log_prior, b.log_prior])
    return Trajectory([torch.cat([u, v]) for u, v in zip(a.states, b.states)], log_prior=prior)
