"""Discrete spaces grown by actions, vectorised over a batch, and their exact evaluation.

`Space` is compiled from the spec's action declarations (gfdsl.library.actions). Every
move is one of a closed set whose inverse is known, so the forward mask, the step, the
backward step and the backward mask all come from the one declaration and cannot
disagree -- tests/test_discrete.py checks back(step(s, a), a) == s and that a move is
allowed forward from s exactly when it is allowed backward from step(s, a), on every
state of small spaces.

States are long tensors of shape (B, n):
  int(lo, hi)[n]  coordinates                     start: all lo
  set[n]          0/1 membership                  start: all 0
  seq(V)[n]       tokens, -1 past the end         start: all -1
Moves are numbered 0..M-1 in declaration order; M (= A - 1) is exit.
"""

from __future__ import annotations

import math
import torch
from torch import nn


class Space(nn.Module):
    def __init__(self, dtype: str, params: list[int], size: int, actions: list[dict], exit_when: str):
        super().__init__()
        self.dtype, self.n = dtype, size
        moves = [a for a in actions if a["entry"] != "exit"]
        self.M = len(moves)
        self.A = self.M + 1
        self.exit_when = exit_when
        if dtype == "seq":
            self.V, self.lo, self.hi = params[0], 0, 0
            tok = [a["args"]["token"] for a in moves]
            app = [a["entry"] == "append" for a in moves]
            self.register_buffer("tok", torch.tensor(tok, dtype=torch.long), persistent=False)
            self.register_buffer("is_append", torch.tensor(app, dtype=torch.bool), persistent=False)
            self.max_level = size
        else:
            self.lo, self.hi = (params[0], params[1]) if dtype == "int" else (0, 1)
            key = "coord" if dtype == "int" else "item"
            coord = [a["args"][key] for a in moves]
            self.register_buffer("coord", torch.tensor(coord, dtype=torch.long), persistent=False)
            self.identity = coord == list(range(size))  # move i raises coordinate i: no gather needed
            self.max_level = size * (self.hi - self.lo)
            # unit[m]: the change move m makes to a state (M, n), so step is s + unit[a]
            unit = torch.zeros(self.M, size, dtype=torch.long)
            unit[torch.arange(self.M), torch.tensor(coord, dtype=torch.long)] = 1
            self.register_buffer("unit", unit, persistent=False)
            # unit_pad[a + 1]: the change action a makes, for a = -1 (padding), moves, exit
            self.register_buffer("unit_pad", nn.functional.pad(unit, (0, 0, 1, 1)), persistent=False)
        self.side = self.hi - self.lo + 1
        self.n_states = (self.side ** size) if dtype != "seq" else (
            size + 1 if self.V == 1 else (self.V ** (size + 1) - 1) // (self.V - 1))  # sum_k V^k, closed form
        # levels at which every action is allowed, so no mask is needed: a coordinate is
        # full after hi - lo moves at the earliest; exit "complete" is masked from the start
        self.free_levels = 0 if exit_when == "complete" or dtype == "seq" else self.hi - self.lo
        if dtype != "seq":
            # packed rows (row id | state | state index) of the compact rollout: move m
            # adds packed_move[m] (unit[m], and its coordinate's stride to the index, where
            # the index fits a long); exit (row M) adds nothing
            self.keyed = self.n_states < 2 ** 62
            stride = self.side ** self.coord if self.keyed else torch.zeros_like(self.coord)
            self.register_buffer("packed_move", nn.functional.pad(torch.cat([unit, stride[:, None]], 1), (1, 0, 0, 1)),
                                 persistent=False)  # (A, 2 + n)
        # encode() writes a 1 at column p * width + value + hot[p] of position p; a scatter
        # into zeros costs a third of one_hot's range checks and reshapes at rollout sizes
        width = self.V + 1 if dtype == "seq" else self.side
        shift = 1 if dtype == "seq" else -self.lo
        self.register_buffer("hot", torch.arange(size) * width + shift, persistent=False)
        if dtype != "seq":
            # hot_penalty (n * width, A): -inf where a hot column forbids an action, 0 else;
            # the sum of a state's hot rows is then its mask as -inf/0 (a move is forbidden
            # by its coordinate's full column, at hi; exit "complete" by any column not full)
            pen = torch.zeros(size * width, self.A)
            pen[(self.hot + self.hi)[self.coord], torch.arange(self.M)] = float("-inf")
            if exit_when == "complete":
                full = torch.zeros(size * width, dtype=torch.bool)
                full[self.hot + self.hi] = True
                pen[~full, self.M] = float("-inf")
            self.register_buffer("hot_penalty", pen, persistent=False)
        self.width = width

    @property
    def device(self) -> torch.device:
        return (self.tok if self.dtype == "seq" else self.coord).device

    # -- the moves and their derived inverses ------------------------------------------------

    def s0(self, B: int, device) -> torch.Tensor:
        fill = -1 if self.dtype == "seq" else self.lo
        return torch.full((B, self.n), fill, dtype=torch.long, device=device)

    def levels(self, s: torch.Tensor) -> torch.Tensor:
        """Moves from the start to s (B,): every move raises it by one, so the graph is a DAG."""
        return (s >= 0).sum(1) if self.dtype == "seq" else (s - self.lo).sum(1)

    def _ends(self, s: torch.Tensor):
        n = (s >= 0).sum(1)  # (B,) lengths
        last = s.gather(1, (n - 1).clamp(min=0)[:, None])[:, 0]
        return n, s[:, 0], last

    def move_mask(self, s: torch.Tensor) -> torch.Tensor:
        """(B, M): move a allowed forward from s."""
        if self.dtype == "seq":
            n = (s >= 0).sum(1)
            return (n < self.n)[:, None].expand(-1, self.M)
        return (s if self.identity else s[:, self.coord]) < self.hi

    def mask_logits_(self, logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Write -inf into logits (B, A) where an action is not allowed from s, in place,
        in as few operations as the space allows (it runs at every step of every rollout)."""
        if self.dtype != "seq" and self.exit_when == "anytime":
            full = (s if self.identity else s[:, self.coord]) >= self.hi
            logits[:, :self.M].masked_fill_(full, float("-inf"))
            return logits
        return logits.masked_fill_(~self.forward_mask(s), float("-inf"))

    def forward_mask(self, s: torch.Tensor) -> torch.Tensor:
        """(B, A): the moves, then exit ("anytime", or "complete": where no move is left)."""
        m = self.move_mask(s)
        ex = torch.ones_like(m[:, :1]) if self.exit_when == "anytime" else ~m.any(1, keepdim=True)
        return torch.cat([m, ex], 1)

    def backward_mask(self, s: torch.Tensor) -> torch.Tensor:
        """(B, M): move a could have produced s (its inverse applies)."""
        if self.dtype == "seq":
            n, first, last = self._ends(s)
            end = torch.where(self.is_append[None, :], last[:, None], first[:, None])  # (B, M)
            return (n > 0)[:, None] & (end == self.tok[None, :])
        return s[:, self.coord] > self.lo

    def step(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Apply move a (B,) in 0..M-1 (callers mask rows that exit or are done)."""
        if self.dtype == "seq":
            n = (s >= 0).sum(1)
            t = self.tok[a][:, None]
            app = s.scatter(1, n.clamp(max=self.n - 1)[:, None], t)
            pre = torch.cat([t, s[:, :-1]], 1)
            return torch.where(self.is_append[a][:, None], app, pre)
        return s + self._buffers["unit"][a]

    def back(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Undo move a (B,): the parent of s along a."""
        if self.dtype == "seq":
            n = (s >= 0).sum(1)
            drop_last = s.scatter(1, (n - 1).clamp(min=0)[:, None], -1)
            drop_first = torch.cat([s[:, 1:], torch.full_like(s[:, :1], -1)], 1)
            return torch.where(self.is_append[a][:, None], drop_last, drop_first)
        return s - self.unit[a]

    # -- what the nets read, and enumeration --------------------------------------------------

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        """(B, E) float: one-hot coordinates (int), the bits (set), one-hot positions with an
        'empty' class (seq)."""
        if self.dtype == "set":
            return s.float()
        x = torch.zeros(s.shape[0], self.n * self.width, device=s.device)
        return x.scatter_(1, s + self._buffers["hot"], 1.0)  # (a dict read: encode runs every step)

    def index(self, s: torch.Tensor) -> torch.Tensor:
        """Position of each state in `enumerate()` (B,) long."""
        if self.dtype != "seq":
            w = self.side ** torch.arange(self.n, device=s.device)
            return ((s - self.lo) * w).sum(1)
        n = (s >= 0).sum(1)
        offset = torch.tensor([sum(self.V ** k for k in range(j)) for j in range(self.n + 1)], device=s.device)
        # tokens read as a base-V number, most significant first: sum_p tok_p V^(n-1-p)
        p = torch.arange(self.n, device=s.device)[None, :]
        w = torch.where(p < n[:, None], self.V ** (n[:, None] - 1 - p).clamp(min=0), 0)
        return offset[n] + (s.clamp(min=0) * w).sum(1)

    def enumerate(self, device=None) -> torch.Tensor:
        """Every state (N, n), in index order."""
        if self.dtype != "seq":
            i = torch.arange(self.n_states, device=device)[:, None]
            w = self.side ** torch.arange(self.n, device=device)[None, :]
            return (i // w) % self.side + self.lo
        out = []
        for length in range(self.n + 1):
            j = torch.arange(self.V ** length, device=device)[:, None]
            p = torch.arange(self.n, device=device)[None, :]
            w = self.V ** (length - 1 - p).clamp(min=0)
            out.append(torch.where(p < length, (j // w) % self.V, -1))
        return torch.cat(out)


@torch.no_grad()
def terminating_distribution(space: Space, log_pf_fn, chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact P_T(x) over every state (N,) float64, by pushing probability mass through the
    DAG level by level (Bengio et al. 2021, eq. 5): P(s') = sum_s P(s) P_F(s'|s), then
    P_T(x) = P(x) P_F(exit|x). `log_pf_fn(states)` gives masked log-probabilities (B, A).
    Also returns the exit mask (N,) bool: the states that can terminate."""
    S = space.enumerate(device=space.device)
    lp = torch.cat([log_pf_fn(S[i:i + chunk]).double() for i in range(0, S.shape[0], chunk)])
    P = lp.exp()  # (N, A)
    mask = space.forward_mask(S)
    P = torch.where(mask, P, torch.zeros_like(P))
    lvl = space.levels(S)
    reach = torch.zeros(S.shape[0], dtype=torch.float64, device=S.device)
    reach[space.index(space.s0(1, S.device))] = 1.0
    order = torch.argsort(lvl, stable=True)
    counts = torch.bincount(lvl, minlength=space.max_level + 1).tolist()
    start = 0
    for c in counts:
        rows = order[start:start + c]
        start += c
        if c == 0:
            continue
        s = S[rows]
        for a in range(space.M):
            ok = mask[rows, a]
            if not ok.any():
                continue
            r = rows[ok]
            child = space.index(space.step(s[ok], torch.full((int(ok.sum()),), a, device=S.device)))
            reach.index_add_(0, child, reach[r] * P[r, a])
    return reach * P[:, space.M], mask[:, space.M]


def log_partition(log_r: torch.Tensor, can_exit: torch.Tensor) -> float:
    return float(torch.logsumexp(torch.where(can_exit, log_r.double(), -math.inf), 0))


@torch.no_grad()
def against_reward(space: Space, log_pf_fn, reward) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The exact P_T of a forward policy beside its target over every state: (P_T (N,),
    R(x)/Z (N,, 0 where exit is not allowed), log Z), all float64."""
    p_t, can_exit = terminating_distribution(space, log_pf_fn)
    log_r = reward(space.enumerate(space.device)).double()
    log_z = log_partition(log_r, can_exit)
    return p_t, torch.where(can_exit, (log_r - log_z).exp(), 0.0), log_z
