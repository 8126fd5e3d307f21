"""RewardGfn: a compiled reward-driven GFlowNet over a discrete space.

  sample(n)            roll P_F from the start state to exit             -> Traj
  loss(batch, step)    the spec's objective on freshly sampled (and replayed) trajectories
  exact()              the exact terminating distribution P_T and its L1 distance to R/Z

Trajectories (gfdsl/reward_rollout.py) are padded tensors: states (T + 1, B, n), actions
(T, B), -1 after the exit. Log-probabilities are (T, B), 0 on padding.

What is recomputed is decided statically from the train block: exploration (epsilon,
temperature) makes training off-policy, but the rollout evaluates the current P_F at
every state it visits anyway, so it keeps P_F's own log-probability of each action it
drew (from whatever mixture) and nothing is evaluated twice; replay brings trajectories
drawn backward from buffered states, which are rescored under P_F in one batched pass
that evaluates each distinct state once.

Objectives (all per trajectory, averaged over the batch):
  tb       (log Z + sum log P_F - log R(x) - sum log P_B)^2          Malkin et al. 2022
  db       (log F(s) + log P_F(s'|s) - log F(s') - log P_B(s|s'))^2, with
           F(x) P_F(exit|x) = R(x) at the end                         Bengio et al. 2023
  subtb    lamda^(j-i)-weighted mean of the balance of every sub-trajectory i..j,
           the terminal node's flow being R(x)                        Madan et al. 2023
  fm       (log in-flow(s) - log out-flow(s))^2 on visited states, edge flows
           exp(P_F logits), plus (log F(x -> exit) - log R(x))^2    Bengio et al. 2021
  vargrad  the batch variance of sum log P_F - sum log P_B - log R(x) (no log Z)
                                                                      Richter et al. 2020
"""

from __future__ import annotations

import torch
from torch import nn

from gfdsl.engine.reward_rollout import Kept, Rollouts, Traj, _distinct, _pad  # noqa: F401 (Kept: re-exported)
from gfdsl.runtime.discrete import Reward, Space, against_reward

NEG_INF = float("-inf")


class _Health:
    """What the trainer reads: whether P_F and P_B gave finite log-probabilities."""

    def __init__(self):
        self.health = torch.ones(2, dtype=torch.bool)
        self.total_steps = 1

    @property
    def round_length(self) -> int:  # no rounds: the whole run
        return self.total_steps


class RewardGfn(Rollouts, nn.Module):
    def __init__(self, attrs: dict, space: Space, nets: nn.ModuleDict, pf: str, pb: str | None, reward: Reward,
                 terms: list[tuple[float, str, dict]], train: dict):
        super().__init__()
        self.spec = attrs
        self.space, self.nets, self.reward = space, nets, reward
        self.pf, self.pb = pf, pb
        self.terms = terms
        names = {n for _, n, _ in terms}
        flows = {a["flow"] for _, n, a in terms if "flow" in a}
        self.flow = next(iter(flows)) if flows else None
        self.log_Z = nn.Parameter(torch.zeros(())) if "tb" in names else None
        self.epsilon, self.temperature = float(train["epsilon"]), float(train["temperature"])
        self.replay_cap, self.replay_fraction = int(train["replay"]), float(train["replay_fraction"])
        self.exact_ok = attrs["space"]["enumerable"]
        # Decided here, once, from the train block: exploration changes which actions are
        # drawn, not how they are scored (the rollout keeps P_F's own log-probabilities
        # of the actions taken); replayed trajectories were drawn by an older policy and
        # backward, so they -- and the batch they join -- are rescored under P_F.
        self.explores = self.epsilon > 0 or self.temperature != 1.0
        self.rescores = self.replay_cap > 0
        self.off_policy = self.explores or self.rescores
        # flow matching reads edge flows, not log P_F / log P_B of the actions taken
        self.scores = names != {"fm"}
        if self.replay_cap:  # a FIFO of terminal states; buffers, so checkpoints keep it
            self.register_buffer("replay_x", space.s0(self.replay_cap, "cpu"))
            self.register_buffer("replay_n", torch.zeros((), dtype=torch.long))
        self.objective = _Health()
        self.data_shape = (space.n,)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

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

    def log_flow(self, s: torch.Tensor) -> torch.Tensor:
        return self.nets[self.flow](self.space.encode(s))[:, 0]

    # -- trajectories ----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int) -> Traj:
        return self.rollout(n)

    def _batch(self, B: int) -> Traj:
        """The training batch: rollouts scored as they are drawn (exploratory or not),
        plus, with replay, trajectories drawn backward from buffered terminal states,
        which log_probs() rescores under the current P_F."""
        n_r = 0
        if self.rescores:
            have = int(self.replay_n)  # one host read per step, only with replay
            n_r = min(int(round(self.replay_fraction * B)), have, B - 1)
        t = self.rollout(B - n_r, explore=self.explores, score=self.scores and not n_r)
        if self.rescores:
            self._remember(t.states[-1])
        if n_r:
            idx = torch.randint(0, min(have, self.replay_cap), (n_r,), device=self.replay_x.device)
            r = self.backward_rollout(self.replay_x[idx].to(self.device))
            T = max(t.actions.shape[0], r.actions.shape[0])
            t, r = _pad(t, T), _pad(r, T)
            t = Traj(torch.cat([t.states, r.states], 1), torch.cat([t.actions, r.actions], 1))
        return t

    @torch.no_grad()
    def _remember(self, x: torch.Tensor) -> None:
        n = int(self.replay_n)
        pos = (n + torch.arange(x.shape[0])) % self.replay_cap
        self.replay_x[pos] = x.to(self.replay_x.device)
        self.replay_n += x.shape[0]

    def log_probs(self, t: Traj) -> tuple[torch.Tensor, torch.Tensor]:
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
        if not dedup:
            return fn(s)
        # the state's index is a key where the space is enumerable (no overflow)
        rep, inv = _distinct(self.space.index(s)) if self.exact_ok else _distinct(s, dim=0)
        return fn(s.index_select(0, rep)).index_select(0, inv)

    # -- objectives ------------------------------------------------------------------------------

    def loss(self, batch: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The spec's objective on B = batch.shape[0] trajectories (the batch carries only
        its size and device: a reward-driven model reads no data)."""
        t = self._batch(batch.shape[0])
        lpf, lpb = self.log_probs(t) if self.scores else (None, None)
        log_r = self.reward(t.states[-1])
        total, terms = 0.0, {}
        for coef, name, args in self.terms:
            v = getattr(self, f"_{name}")(t, lpf, lpb, log_r, args)
            terms[name] = v.detach()
            total = total + coef * v
        if self.scores:
            self.objective.health = torch.stack([lpf.isfinite().all(), lpb.isfinite().all()])
        else:  # fm alone: P_F's health is its edge flows' (set by _fm); P_B is not read
            self.objective.health = torch.stack([self._edge_ok, torch.ones((), dtype=torch.bool, device=total.device)])
        return total, terms

    forward = loss  # DistributedDataParallel calls forward()

    def _tb(self, t, lpf, lpb, log_r, args):
        return (self.log_Z + lpf.sum(0) - log_r - lpb.sum(0)).pow(2).mean()

    def _vargrad(self, t, lpf, lpb, log_r, args):
        z = lpf.sum(0) - lpb.sum(0) - log_r
        return (z - z.mean()).pow(2).mean()

    def _node_flows(self, t: Traj, log_r: torch.Tensor):
        """log F at positions 0..T (T + 1, B): the flow net up to the last state, R(x) at
        the node after exit; and which positions are nodes of the trajectory."""
        T, B = t.actions.shape
        n_b = (t.actions >= 0).sum(0) - 1  # (B,) position of the exit
        k = torch.arange(T + 1, device=log_r.device)[:, None]
        # the flow of each distinct state once (positions 0..T - 1 hold the states the
        # transitions leave; position T is only ever the node after exit, R(x) below)
        if t.kept is not None:
            f = self.log_flow(t.kept.states).index_select(0, t.kept.row).view(T, B)
        else:
            f = self._rows(self.log_flow, t.states[:-1].reshape(T * B, -1))
            f = torch.where(t.actions.reshape(-1) >= 0, f, 0.0).view(T, B)
        f = torch.cat([f, f[-1:]])
        f = torch.where(k == n_b + 1, log_r[None, :], f)
        return f, k <= n_b + 1

    def _db(self, t, lpf, lpb, log_r, args):
        f, node = self._node_flows(t, log_r)
        valid = (t.actions >= 0).float()
        r = f[:-1] + lpf - f[1:] - lpb
        return (r.pow(2) * valid).sum() / valid.sum()

    def _subtb(self, t, lpf, lpb, log_r, args):
        f, node = self._node_flows(t, log_r)  # (T + 1, B)
        c = torch.cat([torch.zeros_like(lpf[:1]), (lpf - lpb).cumsum(0)])  # (T + 1, B)
        r = f[:, None] - f[None, :] + c[None, :] - c[:, None]  # (i, j, B): balance of i..j
        n = f.shape[0]
        i = torch.arange(n, device=f.device)
        gap = (i[None, :] - i[:, None]).float()  # j - i
        pair = (gap > 0)[..., None] & node[None, :, :]  # i < j, j a node (then i is too)
        w = torch.where(pair, args["lamda"] ** gap[..., None], 0.0)
        return ((w * r.pow(2)).sum((0, 1)) / w.sum((0, 1))).mean()

    def _fm(self, t, lpf, lpb, log_r, args, dedup: bool | None = None):
        """Flow matching (Bengio et al. 2021, eq. 9) with log edge flows log F(s -> s') =
        P_F's logits: in-flow = out-flow at every state a move led to, F(x -> exit) = R(x).
        Every state the loss reads -- those states, each one's parents, the terminal
        states -- goes through the net in one call, each distinct state once on CPU
        (T * B * (M + 1) + B rows, mostly repeats: padding and shared parents)."""
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
        self._edge_ok = F.detach().isfinite().all()
        out_flow = torch.logsumexp(F[:N].masked_fill(~sp.forward_mask(s), NEG_INF), 1)  # (N,)
        ins = F[N:N * (M + 1)].view(M, N, -1)[..., :M].diagonal(dim1=0, dim2=2)  # (N, M): F(parent_m -> s)
        in_flow = torch.logsumexp(ins.masked_fill(~parents, NEG_INF), 1)
        bal = torch.where(move > 0, in_flow - out_flow, 0.0)
        end = F[N * (M + 1):, M] - log_r  # (B,) F(x -> exit) = R(x)
        return (bal.pow(2) * move).sum() / move.sum().clamp(min=1) + end.pow(2).mean()

    # -- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def log_z_model(self) -> float | None:
        """The model's own estimate of log Z, where its parametrisation has one."""
        names = {n for _, n, _ in self.terms}
        s0 = self.space.s0(1, self.device)
        if self.log_Z is not None:
            return float(self.log_Z)
        if self.flow is not None:
            return float(self.log_flow(s0)[0])
        if "fm" in names:
            logits = self.nets[self.pf](self.space.encode(s0))
            return float(torch.logsumexp(logits.masked_fill(~self.space.forward_mask(s0), NEG_INF), 1)[0])
        return None

    @torch.no_grad()
    def exact(self) -> dict:
        """Exact terminating distribution vs R(x)/Z: L1 = sum_x |P_T(x) - R(x)/Z| (the
        convention of torchgfn's validation), total variation L1/2, KL(R/Z || P_T) and
        |log Z_model - log Z|."""
        p_t, target, log_z = against_reward(self.space, self.log_pf_all, self.reward)
        l1 = float((p_t - target).abs().sum())
        kl = float(torch.where(target > 0, target * (target.log() - p_t.clamp(min=1e-300).log()), 0.0).sum())
        lzm = self.log_z_model()
        return {"exact_l1": l1, "total_variation": l1 / 2, "kl_target_model": kl, "log_z_true": log_z,
                "log_z_model": lzm, "log_z_error": None if lzm is None else abs(lzm - log_z),
                "mass": float(p_t.sum()), "n_states": int(p_t.shape[0])}

    def distributions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_T, R/Z) over every state, for plots."""
        p_t, target, _ = against_reward(self.space, self.log_pf_all, self.reward)
        return p_t, target


def param_groups(model: RewardGfn, lr: float) -> list[dict]:
    """Nets at the run's learning rate, log Z at the spec's lr_logz (Malkin et al. 2022
    train log Z about 100x faster than the policy)."""
    rest = [p for n, p in model.named_parameters() if n != "log_Z" and p.requires_grad]
    groups = [{"params": rest, "lr": lr}]
    if model.log_Z is not None:
        groups.append({"params": [model.log_Z], "lr": float(model.spec["train"]["lr_logz"])})
    return groups


__all__ = ["Kept", "RewardGfn", "Traj", "param_groups"]
