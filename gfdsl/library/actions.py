"""Discrete spaces grown by actions: the space types, the actions and the policies.

The action notation declares one state over a bounded discrete space:

  int(lo, hi)[D]   integer vectors, each coordinate in lo..hi; start: all lo
                   (the hypergrid of Bengio et al. 2021 is int(0, H - 1)[D])
  set[N]           subsets of N items; start: the empty set
  seq(V)[L]        token sequences over V tokens, of length 0..L; start: empty

Actions are declared once, each as one of a closed set of moves whose inverse gfdsl
knows, so the forward mask, the backward step and the backward mask all follow from the
one declaration (gfdsl.runtime.spaces derives them):

  increment(coord)   int: s[coord] += 1      allowed while s[coord] < hi; undone by -1
  add(item)          set: s |= {item}        allowed while item not in s
  append(token)      seq: s + [token]        allowed while len(s) < L; undone if s[-1] = token
  prepend(token)     seq: [token] + s        allowed while len(s) < L; undone if s[0] = token
  exit(when)         end the trajectory: "anytime", or "complete" (no other move left)

This module is torch-free, like the rest of gfdsl.library.
"""

from __future__ import annotations

from typing import Literal

from gfdsl.library.registry import REGISTRY, Args, Entry, NetRef, NonNegInt, StateType

A, P = "action", "policy"


def space_size(t: StateType) -> int:
    """Number of states of a discrete space (for exact evaluation)."""
    if t.dtype == "int":
        return (t.params[1] - t.params[0] + 1) ** t.numel
    if t.dtype == "set":
        return 2 ** t.numel
    v, n = t.params[0], t.numel
    return n + 1 if v == 1 else (v ** (n + 1) - 1) // (v - 1)  # sum_k v^k in closed form (no O(n^2) sum)


def count_text(n: int) -> str:
    """A count for people: 1,234,567, or 'about 10^30103' where printing every digit
    would be absurd (Python refuses int -> str above 4300 digits)."""
    if n < 10 ** 15:
        return f"{n:,}"
    return f"about 10^{int(n.bit_length() * 0.30103)}"


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


# -- policies ------------------------------------------------------------------------------


class SoftmaxArgs(Args):
    """softmax(net): a masked softmax over the net's logits, one per action."""

    net: NetRef


class UniformArgs(Args):
    """uniform(): every allowed action equally likely."""


REGISTRY.add(Entry("softmax", P, SoftmaxArgs, "learned: masked softmax over one logit per action",
                   learned=lambda a: True))
REGISTRY.add(Entry("uniform", P, UniformArgs, "fixed: uniform over the allowed actions"))
