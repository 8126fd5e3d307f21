"""RewardGfn: a compiled reward-driven GFlowNet over a discrete space.

  sample(n)            roll P_F from the start state to exit             -> Traj
  loss(batch, step)    the spec's objective on freshly sampled (and replayed) trajectories
  exact()              the exact terminating distribution P_T and its L1 distance to R/Z

Trajectories are padded tensors: states (T + 1, B, n) long, actions (T, B) long with
moves 0..M-1, exit M and -1 after the exit; row b makes n_b moves, exits at position n_b
and keeps its terminal state x afterwards. Log-probabilities are (T, B), 0 on padding.

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

from dataclasses import dataclass

import torch
from torch import nn

from gfdsl.runtime.discrete import Reward, Space, against_reward

NEG_INF = float("-inf")


@dataclass
class Kept:
    """The compact rollout's own evaluations of P_F, kept for scoring: R rows, one per
    state evaluated (a step's rows that share a state share a row), in rollout order."""
    states: torch.Tensor  # (R, n) long
    out: torch.Tensor  # (R, A) the net's output (masked where the rollout masked it)
    hidden: list[torch.Tensor]  # per hidden layer (R, h), see MLP.forward_keep
    row: torch.Tensor  # (T * B,) long: the row of each transition's state (0 on padding)


@dataclass
class Traj:
    states: torch.Tensor  # (T + 1, B, n) long
    actions: torch.Tensor  # (T, B) long
    log_pf: torch.Tensor | None = None  # (T, B), kept from an on-policy rollout
    kept: Kept | None = None  # the compact rollout's forward pass (then log_pf is None)


class _Health:
    """What the trainer reads: whether P_F and P_B gave finite log-probabilities."""

    def __init__(self):
        self.health = torch.ones(2, dtype=torch.bool)
        self.total_steps = 1

    @property
    def round_length(self) -> int:  # no rounds: the whole run
        return self.total_steps


def _gumbel(*shape: int, device=None) -> torch.Tensor:
    """Standard Gumbel noise G = -log(-log U): argmax(logits + G) over a row is a sample of
    softmax(logits) (the Gumbel-max trick), with no exp, normalisation or multinomial
    call. U is kept off 0 so that G is finite and -inf logits are never drawn."""
    return torch.rand(*shape, device=device).clamp_(min=1e-30).log_().neg_().log_().neg_()


def _pad(t: Traj, T: int) -> Traj:
    extra = T - t.actions.shape[0]
    if extra <= 0:
        return t
    st = torch.cat([t.states, t.states[-1:].expand(extra, -1, -1)])
    ac = torch.cat([t.actions, torch.full_like(t.actions[:1], -1).expand(extra, -1)])
    return Traj(st, ac)


class RewardGfn(nn.Module):
    # the compact rollout evaluates each distinct state of a step once while the step
    # before had at least this many rows repeating a state (a torch.unique over a step's
    # rows costs about as much as evaluating this many rows of a 256-wide MLP on a CPU)
    DEDUP = 12

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
        has = m.any(1, keepdim=True)
        logits = self.nets[self.pb](self.space.encode(s) if x is None else x)
        return torch.log_softmax(logits.masked_fill(~(m | ~has), NEG_INF), 1)

    def log_flow(self, s: torch.Tensor) -> torch.Tensor:
        return self.nets[self.flow](self.space.encode(s))[:, 0]

    # -- trajectories ----------------------------------------------------------------------------

    def rollout(self, B: int, explore: bool = False, score: bool = False) -> Traj:
        """B forward trajectories from the start state, drawn from P_F (or, with explore,
        from its epsilon / temperature mixture). With score, the trajectory may also carry
        log P_F(a_t | s_t) of the current P_F for the actions taken (T, B), with its
        graph -- whatever mixture drew an action, the loss needs P_F's own log-probability
        -- where keeping it is cheaper than rescoring (log_probs() rescores otherwise).

        Three ways, chosen by size and device:
          table    enumerable spaces smaller than the rows a batch would evaluate: P_F of
                   every state from one net call (kept, with its graph, as the score);
          compact  CPU, coordinate spaces: only the rows still running, no graph; with
                   score, the net's forward pass is kept and replayed once over the
                   batch's distinct states (one backward pass, not one per step);
          steps    every row every step, no host read (the way for a GPU); the score is
                   kept only where states rarely repeat (spaces too big to enumerate)."""
        sp = self.space
        if self.exact_ok and sp.n_states <= B * sp.max_level:
            with torch.set_grad_enabled(score and torch.is_grad_enabled()):
                return self._rollout_table(B, explore, score)
        if self.device.type == "cpu" and sp.dtype != "seq":
            return self._rollout_compact(B, explore, score and torch.is_grad_enabled())
        score = score and not self.exact_ok  # states rarely repeat: keep the rollout's graph
        with torch.set_grad_enabled(score and torch.is_grad_enabled()):
            return self._rollout_steps(B, explore, score)

    def _rollout_steps(self, B: int, explore: bool = False, score: bool = False) -> Traj:
        sp = self.space
        dev = self.device
        sync_free = dev.type == "cpu"
        s = sp.s0(B, dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        states, acts, lps = [s], [], []
        G = _gumbel(sp.max_level + 1, B, sp.A, device=dev)
        for t in range(sp.max_level + 1):
            lp = self.log_pf_all(s)
            q = lp.detach()
            if explore:
                q = self._explore(q, q.isfinite())
            a = torch.where(done, -1, (q + G[t]).argmax(1))
            if score:
                lps.append(lp.gather(1, a.clamp(min=0)[:, None])[:, 0].masked_fill(done, 0.0))
            ex = done | (a == sp.M)
            s = torch.where(ex[:, None], s, sp.step(s, a.clamp(0, sp.M - 1)))
            done = ex
            states.append(s)
            acts.append(a)
            if sync_free and bool(done.all()):
                break
        return Traj(torch.stack(states), torch.stack(acts), torch.stack(lps) if score else None)

    def _rollout_compact(self, B: int, explore: bool, score: bool = False) -> Traj:
        """CPU, coordinate spaces: step only the rows still running (the batch shrinks as
        trajectories exit) and rebuild the states at the end from the actions, a state
        being the start plus the moves so far: s_t = s_0 + cumsum(unit[a]).

        Actions are drawn by the Gumbel-max trick (argmax(logits + G)); exploration keeps
        that form: temperature divides the logits, and with probability epsilon a row's
        logits are replaced by zeros (uniform over the allowed actions). The running rows
        are one packed tensor (row id | state | state index), moved by one add and
        compacted by one boolean index, which also tells how many rows go on.

        Rows at one step share a level, and early in a trajectory many share a state
        (all of them at step 0): while the last step found at least DEDUP rows repeating
        a state, the net evaluates each distinct state of a step once. So the rows the
        net evaluates are (nearly) the batch's distinct states, and with score they are
        kept (Kept: the states, MLP.forward_keep's output and hidden layers) for
        log_probs() to replay with the parameters' graph and to evaluate P_B on: P_F is
        not evaluated a second time and no torch.unique over the batch is needed."""
        sp = self.space
        dev = self.device
        L = sp.max_level + 1
        net = self.nets[self.pf]
        plain = torch.is_autocast_enabled(dev.type) or not getattr(net, "replayable", False)
        score = score and not plain
        # int states are kept as their one-hot columns h = s + hot, which the net's first
        # layer reads from a table (MLP.gather_table): no encoding is built per step
        gather = not plain and sp.dtype == "int"
        hot = sp._buffers["hot"] if gather else 0
        eps, tau = (self.epsilon, self.temperature) if explore else (0.0, 1.0)
        Gs = _gumbel(L, B, sp.A, device=dev).unbind(0)
        coin = torch.rand(L, B, device=dev) < eps if eps > 0 else None  # rows drawn uniformly
        move = sp.packed_move  # (A, 2 + n)
        s0 = sp.s0(B, dev)
        i0 = sp.index(s0[:1]) if sp.keyed else torch.zeros(1, dtype=torch.long, device=dev)
        rs = torch.cat([torch.arange(B, device=dev)[:, None], s0 + hot, i0.expand(B)[:, None]], 1)
        rows, drawn, kept, shared = [], [], [], []  # shared: (kept offset, inv) of deduped steps
        n_kept, dups, M, free = 0, B - 1, sp.M, sp.free_levels
        dedup = self.DEDUP if sp.keyed else B + 1  # the index is the key of a state
        with torch.no_grad():
            if gather:
                table = net.gather_table(sp.n)
                f, mask_ = (lambda h: net.forward_keep(hot=h, table=table)), sp.mask_hot_
            else:
                f = (lambda s: net.forward_keep(sp.encode(s))) if score else (lambda s: (net(sp.encode(s)), None))
                mask_ = sp.mask_logits_
            for t in range(L):
                k = rs.shape[0]
                s = rs[:, 1:-1]  # (k, n) states, or their hot columns
                inv = None
                if t == 0:  # every row at s_0: one evaluation, broadcast below
                    s_eval, inv = s[:1], torch.zeros(k, dtype=torch.long, device=dev)
                elif dups >= dedup:
                    u, inv = torch.unique(rs[:, -1], return_inverse=True)
                    rep = torch.empty(u.shape[0], dtype=torch.long, device=dev).scatter_(
                        0, inv, torch.arange(k, device=dev))  # a row holding each state
                    s_eval = s.index_select(0, rep)
                    dups = k - u.shape[0]
                else:
                    s_eval, dups = s, 0
                out, keep = f(s_eval)
                if score:
                    kept.append((s_eval, out, keep))
                    if inv is not None:
                        shared.append((n_kept, inv))
                    n_kept += s_eval.shape[0]
                    if inv is not None:
                        first = n_kept  # kept rows from here on are one per transition
                if not explore and t >= free:
                    mask_(out, s_eval)  # in place: the kept output is masked too
                logits = out if inv is None or t == 0 else out.index_select(0, inv)  # (k or 1, A)
                if explore:
                    if tau != 1.0:
                        logits = logits / tau
                    if coin is not None:
                        logits = torch.where(coin[t, :k, None], 0.0, logits)
                    if t >= free:
                        logits = mask_(logits.expand(k, -1).clone() if logits.shape[0] < k else logits, s)
                a = (logits + Gs[t][:k]).argmax(1)  # (k,)
                rows.append(rs[:, 0])
                drawn.append(a)
                rs = (rs + move.index_select(0, a))[a < M]  # step; drop the rows that exited
                if rs.shape[0] == 0:
                    break
        T = len(drawn)
        counts = torch.tensor([d.shape[0] for d in drawn], device=dev)
        pos = torch.cat(rows) + B * torch.repeat_interleave(torch.arange(T, device=dev), counts)  # (P,)
        acts = torch.full((T * B,), -1, dtype=torch.long, device=dev)
        acts[pos] = torch.cat(drawn)
        acts = acts.view(T, B)
        moved = (acts >= 0) & (acts < M)
        inc = torch.where(moved[..., None], sp.unit[acts.clamp(0, M - 1)], 0)  # (T, B, n)
        states = torch.cat([s0[None], s0[None] + inc.cumsum(0)])
        if not score:
            return Traj(states, acts)
        # the kept row of each transition: deduped steps (the first ones) through their
        # inverse, every later step row by row
        crow = [off + inv for off, inv in shared] + [torch.arange(first, n_kept, device=dev)]
        row = torch.zeros(T * B, dtype=torch.long, device=dev)
        row[pos] = torch.cat(crow)
        k_states, k_out, k_hidden = zip(*kept)
        return Traj(states, acts, kept=Kept(torch.cat(k_states) - hot, torch.cat(k_out),
                                            [torch.cat(h) for h in zip(*k_hidden)], row))

    def _rollout_table(self, B: int, explore: bool, score: bool) -> Traj:
        """The rollout over state indices: P_F of every state from one net call, children
        from a table built once (a few index operations per step, no net call)."""
        sp = self.space
        S, child = self._tables()
        lp = self.log_pf_all(S)  # (N, A)
        q = lp.detach()
        if explore:
            q = self._explore(q, q.isfinite())
        i = sp.index(sp.s0(1, S.device)).expand(B).clone()
        done = torch.zeros(B, dtype=torch.bool, device=S.device)
        idx, acts = [i], []
        sync_free = S.device.type == "cpu"
        G = _gumbel(sp.max_level + 1, B, sp.A, device=S.device)
        for t in range(sp.max_level + 1):
            a = torch.where(done, -1, (q.index_select(0, i) + G[t]).argmax(1))
            ex = done | (a == sp.M)
            i = torch.where(ex, i, child[i, a.clamp(0, sp.M - 1)])
            done = ex
            idx.append(i)
            acts.append(a)
            if sync_free and bool(done.all()):
                break
        I, A = torch.stack(idx), torch.stack(acts)
        lpf = torch.where(A >= 0, lp[I[:-1], A.clamp(min=0)], 0.0) if score else None
        return Traj(S[I], A, lpf)

    def _tables(self):
        """Every state (N, n) and each one's child along each move (N, M) (-1: not
        allowed), built on first use and kept (not saved: they follow from the spec)."""
        if getattr(self, "_tab", None) is None or self._tab[0].device != self.device:
            sp = self.space
            with torch.no_grad():
                S = sp.enumerate(self.device)
                N = S.shape[0]
                ok = sp.move_mask(S)
                child = torch.full((N, sp.M), -1, dtype=torch.long, device=S.device)
                for m in range(sp.M):
                    child[:, m] = torch.where(ok[:, m], sp.index(sp.step(S, torch.full((N,), m, device=S.device))), -1)
            self._tab = (S, child)
        return self._tab

    def _explore(self, lp: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """log of (1 - eps) softmax(logits / temperature) + eps uniform(allowed)."""
        if self.temperature != 1.0:
            lp = torch.log_softmax(lp / self.temperature, 1)
        if self.epsilon > 0:
            u = allowed.float() / allowed.sum(1, keepdim=True)
            lp = ((1 - self.epsilon) * lp.exp() + self.epsilon * u).log()
        return lp

    @torch.no_grad()
    def backward_rollout(self, x: torch.Tensor) -> Traj:
        """Trajectories that end in x (B, n), drawn backward by P_B, in forward order."""
        sp = self.space
        s, bs, acts = x, [x], []
        cpu = x.device.type == "cpu"
        G = _gumbel(sp.max_level, x.shape[0], sp.M, device=x.device)
        for t in range(sp.max_level):
            at0 = ~sp.backward_mask(s).any(1)
            if cpu and bool(at0.all()):
                break
            a = torch.where(at0, -1, (self.log_pb_all(s) + G[t]).argmax(1))
            s = torch.where(at0[:, None], s, sp.back(s, a.clamp(min=0)))
            bs.append(s)
            acts.append(a)
        K, B = len(acts), x.shape[0]
        if K == 0:
            return Traj(torch.stack([x, x]), torch.full((1, B), sp.M, dtype=torch.long, device=x.device))
        A = torch.stack(acts)  # (K, B): A[k] undoes the move that led to backward state k
        n_b = (A >= 0).sum(0)  # (B,) moves of each trajectory
        BS = torch.stack(bs)  # (K + 1, B, n): BS[n_b] is the start state
        t = torch.arange(K + 2, device=x.device)[:, None]
        src = torch.where(t <= n_b, n_b - t, 0)
        states = BS.gather(0, src[..., None].expand(-1, -1, sp.n))  # (K + 2, B, n)
        t = t[:-1]
        moves = A.gather(0, (n_b - 1 - t).clamp(0, K - 1))
        actions = torch.where(t < n_b, moves, torch.where(t == n_b, sp.M, -1))
        return Traj(states, actions)

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
        t = self.rollout(B - n_r, explore=self.explores, score=not n_r)
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
            lp_b = self.log_pb_all(k.states, x)  # (R, M)
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
        CPU. torch.unique's output size would make a GPU wait for the host inside the
        step, so on a GPU every row is evaluated (same values; the GPU has the width)."""
        if dedup is None:
            dedup = s.device.type == "cpu"
        if not dedup:
            lp = fn(s).gather(1, a[:, None])[:, 0]
            return torch.where(keep, lp, 0.0)
        if self.exact_ok:  # the state's index is a key (no overflow for enumerable spaces)
            u, inv = torch.unique(self.space.index(s), return_inverse=True)
        else:
            u, inv = torch.unique(s, dim=0, return_inverse=True)
        rep = torch.empty(u.shape[0], dtype=torch.long, device=s.device)
        rep.scatter_(0, inv, torch.arange(s.shape[0], device=s.device))  # a row holding each state
        lp = fn(s.index_select(0, rep))[inv.view(-1, 1), a[:, None]][:, 0]
        return torch.where(keep, lp, 0.0)

    # -- objectives ------------------------------------------------------------------------------

    def loss(self, batch: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The spec's objective on B = batch.shape[0] trajectories (the batch carries only
        its size and device: a reward-driven model reads no data)."""
        t = self._batch(batch.shape[0])
        lpf, lpb = self.log_probs(t)
        log_r = self.reward(t.states[-1])
        total, terms = 0.0, {}
        for coef, name, args in self.terms:
            v = getattr(self, f"_{name}")(t, lpf, lpb, log_r, args)
            terms[name] = v.detach()
            total = total + coef * v
        self.objective.health = torch.stack([lpf.isfinite().all(), lpb.isfinite().all()])
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
            a = t.actions.reshape(-1)
            f = self._gather_unique(lambda s: self.log_flow(s)[:, None], t.states[:-1].reshape(T * B, -1),
                                    torch.zeros_like(a), a >= 0).view(T, B)
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

    def _fm(self, t, lpf, lpb, log_r, args):
        sp = self.space
        T, B = t.actions.shape
        a = t.actions.reshape(-1)
        move = ((a >= 0) & (a < sp.M)).float()
        s = t.states[1:].reshape(T * B, -1)  # the state each move led to
        edge = self.nets[self.pf]  # log edge flows log F(s -> s') = P_F logits
        out_flow = torch.logsumexp(edge(sp.encode(s)).masked_fill(~sp.forward_mask(s), NEG_INF), 1)
        parents = sp.backward_mask(s)  # (TB, M)
        ins = []
        for m in range(sp.M):  # the edge flow into s along move m, from its parent
            p = torch.where(parents[:, m:m + 1], sp.back(s, torch.full_like(a, m)), s)  # s: masked below
            ins.append(edge(sp.encode(p))[:, m])
        in_flow = torch.logsumexp(torch.stack(ins, 1).masked_fill(~parents, NEG_INF), 1)
        bal = torch.where(move > 0, in_flow - out_flow, 0.0)
        x = t.states[-1]
        end = edge(sp.encode(x))[:, sp.M] - log_r  # F(x -> exit) = R(x)
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


def lower_reward(g, source) -> RewardGfn:
    """A reward-kind IR -> RewardGfn (nets built once, actions compiled into a Space)."""
    from pathlib import Path

    from gfdsl.lower import _key
    from gfdsl.runtime import nets as N

    G = g.graph
    sp = G["space"]
    space = Space(sp["dtype"], sp["params"], sp["size"], G["actions"], sp["exit"])
    nets = nn.ModuleDict({_key(n): N.build(v["entry"], v["args"]) for n, v in G["nets"].items()})
    spec_dir = Path(source.path).resolve().parent if source is not None and source.path else None
    reward = Reward(G["reward"]["entry"], G["reward"]["args"], space, spec_dir)
    pol = G["policies"]
    pf = _key(pol["forward"]["args"]["net"])
    pb = _key(pol["backward"]["args"]["net"]) if pol["backward"]["entry"] == "softmax" else None
    terms = [(float(t["coef"]), t["term"], {k: (_key(v) if k == "flow" else v) for k, v in t["args"].items()})
             for t in G["objective"]]
    attrs = {k: G[k] for k in ("name", "dims", "objective", "train", "space", "reward", "kind")}
    attrs["dataset"] = None
    return RewardGfn(attrs, space, nets, pf, pb, reward, terms, G["train"])


def param_groups(model: RewardGfn, lr: float) -> list[dict]:
    """Nets at the run's learning rate, log Z at the spec's lr_logz (Malkin et al. 2022
    train log Z about 100x faster than the policy)."""
    rest = [p for n, p in model.named_parameters() if n != "log_Z" and p.requires_grad]
    groups = [{"params": rest, "lr": lr}]
    if model.log_Z is not None:
        groups.append({"params": [model.log_Z], "lr": float(model.spec["train"]["lr_logz"])})
    return groups


__all__ = ["RewardGfn", "Traj", "lower_reward", "param_groups"]
