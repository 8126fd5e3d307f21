"""Reward-driven GFlowNets on discrete spaces: actions, rewards, policies and objectives.

A reward-driven model has one state over a bounded discrete space and no data set:

  int(lo, hi)[D]   integer vectors, each coordinate in lo..hi; start: all lo
                   (the hypergrid of Bengio et al. 2021 is int(0, H - 1)[D])
  set[N]           subsets of N items; start: the empty set
  seq(V)[L]        token sequences over V tokens, of length 0..L; start: empty

Actions are declared once, each as one of a closed set of moves whose inverse gfdsl
knows, so the forward mask, the backward step and the backward mask all follow from the
one declaration (gfdsl.runtime.discrete derives them):

  increment(coord)   int: s[coord] += 1      allowed while s[coord] < hi; undone by -1
  add(item)          set: s |= {item}        allowed while item not in s
  append(token)      seq: s + [token]        allowed while len(s) < L; undone if s[-1] = token
  prepend(token)     seq: [token] + s        allowed while len(s) < L; undone if s[0] = token
  exit(when)         end the trajectory: "anytime", or "complete" (no other move left)

This module is torch-free, like the rest of gfdsl.library.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gfdsl.library.registry import REGISTRY, Args, Entry, NetRef, NonNegInt, PosInt, StateType

A, R, P, O = "action", "reward", "policy", "objective"


def space_size(t: StateType) -> int:
    """Number of states of a discrete space (for exact evaluation)."""
    if t.dtype == "int":
        return (t.params[1] - t.params[0] + 1) ** t.numel
    if t.dtype == "set":
        return 2 ** t.numel
    v, n = t.params[0], t.numel
    return sum(v ** k for k in range(n + 1))


def encoding_size(t: StateType) -> int:
    """Width of the net input gfdsl feeds a policy: one-hot coordinates (int), the item
    bits (set), one-hot positions with an 'empty' class (seq)."""
    if t.dtype == "int":
        return t.numel * (t.params[1] - t.params[0] + 1)
    if t.dtype == "set":
        return t.numel
    return t.numel * (t.params[0] + 1)


def max_moves(t: StateType) -> int:
    """The longest trajectory's number of moves (its exit comes on top)."""
    if t.dtype == "int":
        return t.numel * (t.params[1] - t.params[0])
    return t.numel


# -- actions -------------------------------------------------------------------------------


class IncrementArgs(Args):
    """increment(coord): add 1 to one coordinate of an int state."""

    coord: NonNegInt


class AddArgs(Args):
    """add(item): put one item into a set state."""

    item: NonNegInt


class TokenArgs(Args):
    """append(token) / prepend(token): grow a seq state by one token at one end."""

    token: NonNegInt


class ExitArgs(Args):
    """exit(when = "anytime"): end the trajectory; "complete" allows it only where no
    other move is possible (e.g. a sequence of full length)."""

    when: Literal["anytime", "complete"] = "anytime"


def _bound(field: str, what: str):
    def rule(args, t: StateType) -> tuple[str, int, str] | None:
        """(argument, value, allowed range) when the value is outside the space."""
        v = getattr(args, field)
        n = t.numel if what == "size" else t.params[0]
        return None if v < n else (field, v, f"0..{n - 1}")

    return rule


REGISTRY.add(Entry("increment", A, IncrementArgs, "add 1 to coordinate `coord` (undone by subtracting 1)",
                   info={"types": ("int",), "need": "integer vectors (int(lo, hi)[D])", "bound": _bound("coord", "size")}))
REGISTRY.add(Entry("add", A, AddArgs, "put `item` into the set (undone by taking it out)",
                   info={"types": ("set",), "need": "a set (set[N])", "bound": _bound("item", "size")}))
REGISTRY.add(Entry("append", A, TokenArgs, "append `token` at the end (undone by removing the last token)",
                   info={"types": ("seq",), "need": "sequences (seq(V)[L])", "bound": _bound("token", "vocab")}))
REGISTRY.add(Entry("prepend", A, TokenArgs, "prepend `token` at the front (undone by removing the first token)",
                   info={"types": ("seq",), "need": "sequences (seq(V)[L])", "bound": _bound("token", "vocab")}))
REGISTRY.add(Entry("exit", A, ExitArgs, "end the trajectory; the state reached is the object x",
                   info={"types": ("int", "set", "seq"), "need": "", "bound": None}))


# -- rewards -------------------------------------------------------------------------------


class RewardArgs(Args):
    log_min: float = Field(default=-100.0, description="log R(x) is clipped from below at this value")


class HypergridArgs(RewardArgs):
    """hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0): Bengio et al. (2021), eq. in section 4.1:
    with a_d = |s_d / (H - 1) - 0.5|, R(s) = r0 + r1 prod_d [0.25 < a_d]
    + r2 prod_d [0.3 < a_d < 0.4]."""

    r0: float = Field(default=0.1, ge=0)
    r1: float = Field(default=0.5, ge=0)
    r2: float = Field(default=2.0, ge=0)


class ModesArgs(RewardArgs):
    """hamming_modes(n = 8, beta = 3.0, seed = 0): n reference sequences drawn uniformly
    from the seed; log R(x) = -beta * min_m d_H(x, m) / L (Malkin et al. 2022's bit-sequence
    task; a missing position counts as a mismatch)."""

    n: PosInt = Field(default=8, le=100_000)
    beta: float = Field(default=3.0, ge=0)
    seed: NonNegInt = 0


class TableArgs(RewardArgs):
    """table(file, log = false): R(x) read from a .npy file (path relative to the spec),
    one entry per state in gfdsl's enumeration order (`gfdsl compile --dump ir` says it)."""

    file: str = Field(min_length=1)
    log: bool = False


REGISTRY.add(Entry("hypergrid", R, HypergridArgs, "hypergrid reward of Bengio et al. (2021): r0 + r1 outer ring + r2 band",
                   info={"types": ("int",), "need": "integer vectors (int(lo, hi)[D])"}))
REGISTRY.add(Entry("hamming_modes", R, ModesArgs, "exp(-beta * Hamming distance to the nearest of n seeded modes / L)",
                   info={"types": ("seq", "set"), "need": "sequences or sets"}))
REGISTRY.add(Entry("table", R, TableArgs, "a reward per state from a .npy file",
                   info={"types": ("int", "set", "seq"), "need": ""}))


# -- policies ------------------------------------------------------------------------------


class SoftmaxArgs(Args):
    """softmax(net): a masked softmax over the net's logits, one per action."""

    net: NetRef


class UniformArgs(Args):
    """uniform(): every allowed action equally likely."""


REGISTRY.add(Entry("softmax", P, SoftmaxArgs, "learned: masked softmax over one logit per action",
                   learned=lambda a: True))
REGISTRY.add(Entry("uniform", P, UniformArgs, "fixed: uniform over the allowed actions"))


# -- objectives ----------------------------------------------------------------------------


class TbArgs(Args):
    """tb(): trajectory balance (Malkin et al. 2022) with a learned log Z."""


class DbArgs(Args):
    """db(flow): detailed balance (Bengio et al. 2023) with a learned state flow log F(s)."""

    flow: NetRef


class SubTbArgs(Args):
    """subtb(flow, lamda = 0.9): sub-trajectory balance (Madan et al. 2023), every
    sub-trajectory weighted by lamda^length."""

    flow: NetRef
    lamda: float = Field(default=0.9, gt=0, le=1)


class NoArgs(Args):
    pass


def _both(a) -> set[str]:
    return {"pf", "pb"}


REGISTRY.add(Entry("tb", O, TbArgs, "trajectory balance with a learned log Z (needs a reward)",
                   info={"trains": _both, "needs": "reward"}))
REGISTRY.add(Entry("db", O, DbArgs, "detailed balance with a learned state flow (needs a reward)",
                   info={"trains": _both, "needs": "reward"}))
REGISTRY.add(Entry("subtb", O, SubTbArgs, "sub-trajectory balance, lamda-weighted (needs a reward)",
                   info={"trains": _both, "needs": "reward"}))
REGISTRY.add(Entry("fm", O, NoArgs, "flow matching on edge flows exp(logits) (needs a reward; P_B implied)",
                   info={"trains": lambda a: {"pf"}, "needs": "reward"}))
REGISTRY.add(Entry("vargrad", O, NoArgs, "log Z-free trajectory balance: batch variance (needs a reward)",
                   info={"trains": _both, "needs": "reward"}))

REWARD_OBJECTIVES = ("tb", "db", "subtb", "fm", "vargrad")
