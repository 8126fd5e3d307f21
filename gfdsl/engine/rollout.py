"""Rollouts of an action space (mixed into gfdsl.engine.branching.Branching): trajectories
drawn forward by P_F from the start state, or backward by P_B from given terminal states.

Trajectories are padded tensors: states (T + 1, B, n) long, actions (T, B) long with
moves 0..M-1, exit M and -1 after the exit; row b makes n_b moves, exits at position n_b
and keeps its terminal state x afterwards.

Every rollout draws actions by the Gumbel-max trick (Gumbel 1954; Maddison, Tarlow &
Minka 2014): argmax(log p + G) with G standard Gumbel is a sample of p, and the noise of
a whole rollout is drawn in one call on the model's device.
"""

from __future__ import annotations

import torch

from gfdsl.engine.trajectory import Kept, Trajectory


class NonFiniteLogits(ArithmeticError):
    """P_F's logits were not finite at position t of a rollout: an action drawn from them
    would be arbitrary (possibly one the mask forbids). The training loop reports it as
    E804 at the step it happened."""

    def __init__(self, t: int | None):
        super().__init__("P_F's logits are not finite" + (f" at position {t} of the rollout" if t is not None else
                                                          " on some states"))
        self.t = t


def _gumbel(*shape: int, device=None) -> torch.Tensor:
    """Standard Gumbel noise G = -log(-log U): argmax(logits + G) over a row is a sample of
    softmax(logits) (the Gumbel-max trick), with no exp, normalisation or multinomial
    call. U is kept off 0 so that G is finite and -inf logits are never drawn."""
    return torch.rand(*shape, device=device).clamp_(min=1e-30).log_().neg_().log_().neg_()


def _distinct(key: torch.Tensor, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rep, inv) for the rows of key (N,) or (N, n) with dim = 0: rep (U,) a row holding
    each distinct key, inv (N,) each row's distinct key, so that key[rep][inv] == key."""
    u, inv = torch.unique(key, dim=dim, return_inverse=True)
    rep = torch.empty(u.shape[0], dtype=torch.long, device=key.device)
    return rep.scatter_(0, inv, torch.arange(key.shape[0], device=key.device)), inv


class Rollouts:
    """The rollouts of Branching (which provides space, nets, pf, the exploration settings
    and the policies log_pf_all / log_pb_all)."""

    # the compact rollout evaluates each distinct state of a step once while the step
    # before had at least this many rows repeating a state (a torch.unique over a step's
    # rows costs about as much as evaluating this many rows of a 256-wide MLP on a CPU)
    DEDUP = 12

    def rollout(self, B: int, explore: bool = False, score: bool = False) -> Trajectory:
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
        self._last = (0, None)  # (position, the net's output there): read only if the rollout fails
        try:
            if self.per_row:  # rows with their own conditions: every row every step
                with torch.set_grad_enabled(score and not self.exact_ok and torch.is_grad_enabled()):
                    return self._rollout_steps(B, explore, score and not self.exact_ok)
            if self.exact_ok and sp.n_states <= B * sp.max_level:
                with torch.set_grad_enabled(score and torch.is_grad_enabled()):
                    return self._rollout_table(B, explore, score)
            if self.device.type == "cpu" and sp.dtype != "seq":
                return self._rollout_compact(B, explore, score and torch.is_grad_enabled())
            score = score and not self.exact_ok  # states rarely repeat: keep the rollout's graph
            with torch.set_grad_enabled(score and torch.is_grad_enabled()):
                return self._rollout_steps(B, explore, score)
        except (IndexError, RuntimeError):
            # an action drawn from NaN logits may be one the mask forbids, and the state it
            # leads to is out of range: name the cause where the net's output was not finite
            t, out = self._last
            if out is not None and not bool(torch.isfinite(out.detach().masked_fill(out == float("-inf"), 0)).all()):
                raise NonFiniteLogits(t) from None
            raise

    def _rollout_steps(self, B: int, explore: bool = False, score: bool = False) -> Trajectory:
        sp = self.space
        dev = self.device
        sync_free = dev.type == "cpu"
        s = sp.s0(B, dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        states, acts, lps = [s], [], []
        G = _gumbel(sp.max_level + 1, B, sp.A, device=dev)
        for t in range(sp.max_level + 1):
            lp = self.log_pf_all(s)
            self._last = (t, lp)
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
        return Trajectory(torch.stack(states), torch.stack(lps) if score else None, actions=torch.stack(acts))

    def _rollout_compact(self, B: int, explore: bool, score: bool = False) -> Trajectory:
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
        # int states are kept as their one-hot columns h = s + hot: one embedding_bag over
        # a table built once per rollout gives the first layer's pre-activation
        # (MLP.gather_table) and, in its last A columns, the mask as -inf/0 (hot_penalty)
        gather = not plain and sp.dtype == "int"
        hot = sp._buffers["hot"] if gather else 0
        eps, tau = (self.epsilon, self.temperature) if explore else (0.0, 1.0)
        Gs = _gumbel(L, B, sp.A, device=dev).unbind(0)
        coin = torch.rand(L, B, device=dev) < eps if eps > 0 else None  # rows drawn uniformly
        move = sp.packed_move  # (A, 2 + n)
        s0 = sp.s0(B, dev)
        i0 = sp.index(s0[:1]) if sp.keyed else torch.zeros(1, dtype=torch.long, device=dev)
        ar = torch.arange(B, device=dev)
        rs = torch.cat([ar[:, None], s0 + hot, i0.expand(B)[:, None]], 1)
        packed, drawn, kept, shared = [], [], [], []  # shared: (kept offset, inv) of deduped steps
        n_kept, first, dups, M = 0, 0, B - 1, sp.M
        dedup = self.DEDUP if sp.keyed else B + 1  # the index is the key of a state
        with torch.no_grad():
            f = _evaluator(net, sp, gather, score, ar)
            for t in range(L):
                k = rs.shape[0]
                s = rs[:, 1:-1]  # (k, n) states, or their hot columns
                inv = None
                if t == 0:  # every row at s_0: one evaluation, broadcast below
                    s_eval, inv = s[:1], ar[:k] * 0
                elif dups >= dedup:
                    rep, inv = _distinct(rs[:, -1])  # the state index is its key
                    s_eval = s.index_select(0, rep)
                    dups = k - rep.shape[0]
                else:
                    s_eval, dups = s, 0
                out, keep, pen = f(s_eval)  # out (k or fewer, A): the net's own, unmasked
                self._last = (t, out)
                if score:
                    kept.append((s_eval, out, keep))
                    if inv is not None:
                        shared.append((n_kept, inv))
                    n_kept += s_eval.shape[0]
                    if inv is not None:
                        first = n_kept  # kept rows from here on are one per transition
                logits = _masked(sp, out, pen, s_eval, s, inv, t, k, explore, tau, coin)
                a = (logits + Gs[t][:k]).argmax(1)  # (k,)
                packed.append(rs)
                drawn.append(a)
                rs = (rs + move.index_select(0, a))[a < M]  # step; drop the rows that exited
                if rs.shape[0] == 0:
                    break
        states, acts, pos = _rebuild(sp, s0, packed, drawn)
        if not score:
            return Trajectory(states, actions=acts)
        return Trajectory(states, actions=acts, kept=_kept(kept, shared, first, n_kept, acts, pos, hot))

    def _rollout_table(self, B: int, explore: bool, score: bool) -> Trajectory:
        """The rollout over state indices: P_F of every state from one net call, children
        from a table built once (a few index operations per step, no net call)."""
        sp = self.space
        S, child = self._tables()
        lp = self.log_pf_all(S)  # (N, A)
        self._last = (None, lp)
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
        return Trajectory(S[I], lpf, actions=A)

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
    def backward_rollout(self, x: torch.Tensor) -> Trajectory:
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
            return Trajectory(torch.stack([x, x]), actions=torch.full((1, B), sp.M, dtype=torch.long, device=x.device))
        A = torch.stack(acts)  # (K, B): A[k] undoes the move that led to backward state k
        n_b = (A >= 0).sum(0)  # (B,) moves of each trajectory
        BS = torch.stack(bs)  # (K + 1, B, n): BS[n_b] is the start state
        t = torch.arange(K + 2, device=x.device)[:, None]
        src = torch.where(t <= n_b, n_b - t, 0)
        states = BS.gather(0, src[..., None].expand(-1, -1, sp.n))  # (K + 2, B, n)
        t = t[:-1]
        moves = A.gather(0, (n_b - 1 - t).clamp(0, K - 1))
        actions = torch.where(t < n_b, moves, torch.where(t == n_b, sp.M, -1))
        return Trajectory(states, actions=actions)


def _evaluator(net, sp, gather: bool, score: bool, ar: torch.Tensor):
    """The compact rollout's net call on a step's rows: (the net's output (R, A), what
    forward_keep keeps or None, the mask as -inf/0 (R, A) or None). From the hot
    columns through the first-layer table where int states allow it, else encoded."""
    if gather:
        table = torch.cat([net.gather_table(sp.n), sp._buffers["hot_penalty"]], 1)  # (n * width, h_1 + A)
        h1, offsets = table.shape[1] - sp.A, ar * sp.n

        def f(h):
            e = torch.embedding_bag(table, h.reshape(-1), offsets[:h.shape[0]], False, 0, False, None, False, None)[0]
            out, keep = net.forward_keep(first=e[:, :h1])
            return out, keep, e[:, h1:]
        return f

    def f(s):
        x = sp.encode(s)
        out, keep = net.forward_keep(x) if score else (net(x), None)
        return out, keep, None
    return f


def _kept(kept: list, shared: list, first: int, n_kept: int, acts: torch.Tensor, pos: torch.Tensor, hot) -> Kept:
    """What the compact rollout keeps for the loss's replay: the evaluated states, the
    net's outputs and hidden layers, and the kept row of each transition (deduped steps --
    the first ones -- through their inverse, every later step row by row). Non-finite
    outputs raise NonFiniteLogits: one check per rollout, before its actions are used."""
    dev = acts.device
    crow = [off + inv for off, inv in shared] + [torch.arange(first, n_kept, device=dev)]
    row = torch.zeros(acts.numel(), dtype=torch.long, device=dev)
    row[pos] = torch.cat(crow)
    k_states, k_out, k_hidden = zip(*kept)
    k_out = torch.cat(k_out)
    if not bool(torch.isfinite(k_out).all()):
        raise NonFiniteLogits(None)
    return Kept(torch.cat(k_states) - hot, k_out, [torch.cat(h) for h in zip(*k_hidden)], row)


def _masked(sp, out, pen, s_eval, s, inv, t: int, k: int, explore: bool, tau: float, coin):
    """The logits actions are drawn from at step t (k, A) (or (1, A) at step 0, which
    broadcasts): masked from the level where a move can be forbidden on, spread to the
    rows through inv where a step's repeated states were evaluated once, and for
    exploration divided by the temperature, or zeroed (uniform) on epsilon rows."""
    free = sp.free_levels
    logits = out
    if not explore and t >= free:
        logits = out + pen if pen is not None else sp.mask_logits_(out, s_eval)  # (in place: replay masks again)
    if inv is not None and t > 0:
        logits = logits.index_select(0, inv)  # (k, A); step 0 broadcasts (1, A)
    if explore:
        if tau != 1.0:
            logits = logits / tau
        if coin is not None:
            logits = torch.where(coin[t, :k, None], 0.0, logits)
        if t >= free:
            if pen is not None:
                logits = logits + (pen if inv is None or t == 0 else pen.index_select(0, inv))
            else:
                logits = sp.mask_logits_(logits.expand(k, -1).clone() if logits.shape[0] < k else logits, s)
    return logits


def _rebuild(sp, s0: torch.Tensor, packed: list, drawn: list):
    """The padded trajectories from a compact rollout's packed rows and drawn actions:
    states (T + 1, B, n) as the start plus the cumulative moves, actions (T, B) with -1
    after the exit, and each drawn action's position in (T * B,)."""
    T, B, dev = len(drawn), s0.shape[0], s0.device
    counts = torch.tensor([d.shape[0] for d in drawn], device=dev)
    pos = torch.cat(packed)[:, 0] + B * torch.repeat_interleave(torch.arange(T, device=dev), counts)  # (P,)
    acts = torch.full((T * B,), -1, dtype=torch.long, device=dev)
    acts[pos] = torch.cat(drawn)
    acts = acts.view(T, B)
    inc = sp.unit_pad.index_select(0, acts.view(-1) + 1).view(T, B, -1)  # (T, B, n): 0 for exit, -1
    return torch.cat([s0[None], s0[None] + inc.cumsum(0)]), acts, pos
