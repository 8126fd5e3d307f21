"""Branching: the rollouts and scoring of an action space -- a state grown by moves
from a closed set, ended by exit (the hypergrid, sets, sequences). A branching DAG over
a space too large to unroll, reached through the same API as a chain:

  forward(n, explore, score)   roll P_F from the start state to exit    -> Trajectory
  backward(x)                  roll P_B back from terminal states x     -> Trajectory
  log_probs(t)                 (log P_F, log P_B) (T, B) of the moves taken
  log_flows(t, log_r, net)     log F(s) at every position, for db and subtb
  flow_matching(t, log_r)      the fm loss over the edge flows exp(P_F logits)

Trajectories (gfdsl/engine/rollout.py) are padded tensors: states (T + 1, B, n),
actions (T, B), -1 after the exit. Log-probabilities are (T, B), 0 on padding.

What is recomputed is decided statically from the train block: exploration (epsilon,
temperature) makes training off-policy, but the rollout evaluates the current P_F at
every state it visits anyway, so it keeps P_F's own log-probability of each action it
drew (from whatever mixture) and nothing is evaluated twice; replayed trajectories,
drawn backward from buffered states, are rescored under P_F in one batched pass that
evaluates each distinct state once.
"""

from __future__ import annotations

import torch
from torch import nn

from gfdsl.engine.rollout import Rollouts, _distinct
from gfdsl.engine.trajectory import Trajectory
from gfdsl.runtime.spaces import Space, against_reward

NEG_INF = float("-inf")


class Branching(Rollouts, nn.Module):
    def __init__(self, space: Space, nets: nn.ModuleDict, pf: str, pb: str | None, train: dict, enumerable: bool):
        super().__init__()
        self.space, self.nets, self.pf, self.pb = space, nets, pf, pb
        self.epsilon, self.temperature = float(train["epsilon"]), float(train["temperature"])
        self.exact_ok = enumerable
        # exploration changes which actions are drawn, not how they are scored
        self.explores = self.epsilon > 0 or self.temperature != 1.0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def T(self) -> int:
        return self.space.max_level + 1

    @property
    def per_row(self) -> bool:
        """Whether rows carry their own condition values (a conditional model's training
        batch): P_F is then a function of the state and the row, so states are not
        deduplicated and the rollout steps every row (gfdsl.runtime.conditions)."""
        c = getattr(self, "conditions", None)
        return c is not None and c.rows > 1

    # -- policies -----------------------------------------------------------------------------

    def log_pf_all(self, s: torch.Tensor) -> torch.Tensor:
        """log P_F(a | s) (B, A), -inf where a is not allowed."""
        logits = self.nets[self.pf](self.space.encode(s))  # a fresh tensor: masked in place
        return torch.log_softmax(self.space.mask_logits_(logits, s), 1)

    def log_pb_all(self, s: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """log P_B(a | s) (B, M) over the moves that could have produced s (x: s encoded,
        if the caller has it). Rows with no parent (the start state) stay finite, so no
        NaN reaches a gradient."""
        m = self.space.backward_mask(s)
        if self.pb is None:  # uniform over the parents
            return torch.where(m, -m.sum(1, keepdim=True).clamp(min=1).float().log(), NEG_INF)
        logits = self.nets[self.pb](self.space.encode(s) if x is None else x)
        return self._pb_normalise(logits, m)

    @staticmethod
    def _pb_normalise(logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """log_softmax of the P_B logits (B, M) over the parents m (B, M); a row with no
        parent is left unmasked, so that it stays finite."""
        return torch.log_softmax(logits.masked_fill(~(m | ~m.any(1, keepdim=True)), NEG_INF), 1)

    def log_flow(self, s: torch.Tensor, net: nn.Module) -> torch.Tensor:
        """log F(s) (B,) from a flow net reading the encoded state."""
        return net(self.space.encode(s))[:, 0]

    # -- trajectories ----------------------------------------------------------------------------

    def forward(self, n: int, explore: float = 0.0, score: bool = False) -> Trajectory:
        return self.rollout(n, explore=bool(explore), score=score)

    def backward(self, x: torch.Tensor) -> Trajectory:
        """Trajectories that end in x (B, n), drawn backward by P_B, unscored."""
        return self.backward_rollout(x)

    def log_probs(self, t: Trajectory) -> tuple[torch.Tensor, torch.Tensor]:
        """log P_F and log P_B of every transition (T, B), 0 on padding and for exit's P_B.

        Log-probabilities are a function of the state, and a batch visits the same states
        many times (every trajectory leaves the start state): each distinct state is
        evaluated once, with gradient, and the rows are gathered from it. The result and
        its gradient are those of evaluating every row. A compact rollout's kept pass
        already has the distinct states: P_F is its replay and P_B is evaluated on the
        same rows (the child of the move at (t, b) is the state of transition (t + 1, b))."""
        sp = self.space
        T, B = t.actions.shape
        a = t.actions.reshape(-1)
        valid, move = a >= 0, (a >= 0) & (a < sp.M)
        if t.kept is not None:
            k = t.kept
            x = sp.encode(k.states)
            logits = self.nets[self.pf].replay(k.out, x, k.hidden)  # (R, A) with the graph
            lp_f = torch.log_softmax(sp.mask_logits_(logits, k.states), 1)
            pb = self.nets[self.pb] if self.pb is not None else None
            if getattr(pb, "replayable", False):  # P_B on the same rows, by the same replay
                with torch.no_grad():
                    out_b, keep_b = pb.forward_keep(x)
                lp_b = self._pb_normalise(pb.replay(out_b, x, keep_b), sp.backward_mask(k.states))  # (R, M)
            else:
                lp_b = self.log_pb_all(k.states, x)
            child = torch.cat([k.row[B:], k.row[:B]])  # the next position's row (moves only)
            lpf = lp_f.view(-1).index_select(0, k.row * sp.A + a.clamp(min=0))
            lpb = lp_b.view(-1).index_select(0, child * sp.M + a.clamp(0, sp.M - 1))
            return torch.where(valid, lpf, 0.0).view(T, B), torch.where(move, lpb, 0.0).view(T, B)
        if t.log_pf is not None:
            lpf = t.log_pf
        else:
            lpf = self._gather_unique(self.log_pf_all, t.states[:-1].reshape(T * B, -1), a.clamp(min=0), valid)
            lpf = lpf.view(T, B)
        lpb = self._gather_unique(self.log_pb_all, t.states[1:].reshape(T * B, -1), a.clamp(0, sp.M - 1), move)
        return lpf, lpb.view(T, B)

    def _gather_unique(self, fn, s: torch.Tensor, a: torch.Tensor, keep: torch.Tensor,
                       dedup: bool | None = None) -> torch.Tensor:
        """fn(s)[row, a[row]] where keep, else 0, evaluating fn once per distinct state on
        CPU (_rows)."""
        return torch.where(keep, self._rows(fn, s, dedup).gather(1, a[:, None])[:, 0], 0.0)

    def _rows(self, fn, s: torch.Tensor, dedup: bool | None = None) -> torch.Tensor:
        """fn(s) (N, ...) for every row of s, fn evaluated once per distinct state on CPU.
        torch.unique's output size would make a GPU wait for the host inside the step, so
        on a GPU every row is evaluated (same values; the GPU has the width)."""
        if dedup is None:
            dedup = s.device.type == "cpu"
        if not dedup or self.per_row:
            return fn(s)
        # the state's index is a key where the space is enumerable (no overflow)
        rep, inv = _distinct(self.space.index(s)) if self.exact_ok else _distinct(s, dim=0)
        return fn(s.index_select(0, rep)).index_select(0, inv)

    # -- flows ------------------------------------------------------------------------------------

    def log_flows(self, t: Trajectory, log_r: torch.Tensor, net: nn.Module, looking=None):
        """log F at positions 0..T (T + 1, B): the flow net up to the last state, R(x) at
        the node after exit; and which positions are nodes of the trajectory."""
        T, B = t.actions.shape
        n_b = (t.actions >= 0).sum(0) - 1  # (B,) position of the exit
        k = torch.arange(T + 1, device=log_r.device)[:, None]
        # the flow of each distinct state once (positions 0..T - 1 hold the states the
        # transitions leave; position T is only ever the node after exit, R(x) below)
        if t.kept is not None:
            f = self.log_flow(t.kept.states, net).index_select(0, t.kept.row).view(T, B)
        else:
            f = self._rows(lambda s: self.log_flow(s, net), t.states[:-1].reshape(T * B, -1))
            f = torch.where(t.actions.reshape(-1) >= 0, f, 0.0).view(T, B)
        f = torch.cat([f, f[-1:]])
        f = torch.where(k == n_b + 1, log_r[None, :], f)
        return f, k <= n_b + 1

    def flow_matching(self, t: Trajectory, log_r: torch.Tensor, dedup: bool | None = None):
        """Flow matching (Bengio et al. 2021, eq. 9) with log edge flows log F(s -> s') =
        P_F's logits: in-flow = out-flow at every state a move led to, F(x -> exit) = R(x).
        Every state the loss reads -- those states, each one's parents, the terminal
        states -- goes through the net in one call, each distinct state once on CPU
        (T * B * (M + 1) + B rows, mostly repeats: padding and shared parents).
        Returns the loss and whether every edge flow was finite."""
        sp = self.space
        T, B = t.actions.shape
        N, M = T * B, sp.M
        a = t.actions.reshape(-1)
        move = ((a >= 0) & (a < M)).float()
        s = t.states[1:].reshape(N, -1)  # (N, n) the state each move led to
        parents = sp.backward_mask(s)  # (N, M)
        # the parent of s along move m (s itself where there is none: masked below)
        par = torch.stack([torch.where(parents[:, m:m + 1], sp.back(s, torch.full_like(a, m)), s)
                           for m in range(M)])  # (M, N, n)
        net = self.nets[self.pf]
        F = self._rows(lambda v: net(sp.encode(v)), torch.cat([s, par.reshape(M * N, -1), t.states[-1]]), dedup)
        out_flow = torch.logsumexp(F[:N].masked_fill(~sp.forward_mask(s), NEG_INF), 1)  # (N,)
        ins = F[N:N * (M + 1)].view(M, N, -1)[..., :M].diagonal(dim1=0, dim2=2)  # (N, M): F(parent_m -> s)
        in_flow = torch.logsumexp(ins.masked_fill(~parents, NEG_INF), 1)
        bal = torch.where(move > 0, in_flow - out_flow, 0.0)
        end = F[N * (M + 1):, M] - log_r  # (B,) F(x -> exit) = R(x)
        loss = (bal.pow(2) * move).sum() / move.sum().clamp(min=1) + end.pow(2).mean()
        return loss, F.detach().isfinite().all()  # and whether every edge flow was finite (P_F's health)

    # -- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def exact(self, log_z_model: float | None, reward) -> dict:
        """Exact terminating distribution vs R(x)/Z: L1 = sum_x |P_T(x) - R(x)/Z| (the
        convention of torchgfn's validation), total variation L1/2, KL(R/Z || P_T) and
        |log Z_model - log Z|."""
        p_t, target, log_z = against_reward(self.space, self.log_pf_all, reward)
        l1 = float((p_t - target).abs().sum())
        kl = float(torch.where(target > 0, target * (target.log() - p_t.clamp(min=1e-300).log()), 0.0).sum())
        lzm = log_z_model
        return {"exact_l1": l1, "total_variation": l1 / 2, "kl_target_model": kl, "log_z_true": log_z,
                "log_z_model": lzm, "log_z_error": None if lzm is None else abs(lzm - log_z),
                "mass": float(p_t.sum()), "n_states": int(p_t.shape[0])}

    def distributions(self, reward) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_T, R/Z) over every state, for plots."""
        p_t, target, _ = against_reward(self.space, self.log_pf_all, reward)
        return p_t, target


__all__ = ["Branching"]
