"""The abstract syntax tree of a `.gfn` spec: frozen dataclasses, each with a `Span`.

The parser (gfdsl.lang.parse) builds it; the checker (gfdsl.lang.check) reads it; `fmt` prints it
back canonically. `dump()` gives the deterministic text behind `gfdsl compile --dump ast`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Union

from gfdsl.lang.source import Span

# -- expressions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: int | float
    text: str  # as written, so fmt keeps `1e-4` as `1e-4`
    span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Str:
    value: str
    span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Name:
    name: str
    span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Index:
    """`name[expr]`: an element of an indexed state or net family."""

    name: str
    index: "Expr"
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class ListLit:
    items: tuple["Expr", ...]
    span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Arg:
    name: str | None  # None for a positional argument
    value: "Expr"
    span: Span = field(compare=False)
    name_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Call:
    """`name(arg, ...)`: a registry entry (kernel, net, schedule, data set, objective)."""

    name: str
    args: tuple[Arg, ...]
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / % **
    left: "Expr"
    right: "Expr"
    span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span = field(compare=False)
    depth: int = field(default=1, compare=False)


Expr = Union[Num, Str, Bool, Name, Index, ListLit, Call, BinOp, Neg]

# -- declarations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    name: str
    value: Expr
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class IndexRange:
    """`var in lo..hi` (inclusive at both ends)."""

    var: str
    lo: Expr
    hi: Expr
    span: Span = field(compare=False)
    var_span: Span = field(compare=False)


@dataclass(frozen=True)
class TypeExpr:
    """`real[D]`, `binary[64]`, `cat(17)[64]`, `real[1, 8, 8]`."""

    name: str
    params: tuple[Expr, ...]
    shape: tuple[Expr, ...]
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class StateRef:
    name: str
    index: Expr | None
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class DimsBlock:
    assigns: tuple[Assign, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class ScheduleDecl:
    name: str
    call: Call
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class StateDecl:
    name: str
    range: IndexRange | None
    type: TypeExpr
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class SourceDecl:
    """`source x ~ prior(...)`, `source x ~ dataset(...)` or `source x = value`."""

    ref: StateRef
    prior: Call | None
    span: Span = field(compare=False)
    value: Expr | None = None  # a point mass


@dataclass(frozen=True)
class DataStateDecl:
    ref: StateRef
    span: Span = field(compare=False)


@dataclass(frozen=True)
class NetDecl:
    name: str
    range: IndexRange | None
    call: Call
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class StepField:
    direction: str  # "forward" | "backward"
    call: Call
    span: Span = field(compare=False)


@dataclass(frozen=True)
class StepDecl:
    src: StateRef
    dst: StateRef
    loop: IndexRange | None
    given: tuple[StateRef, ...]
    fields: tuple[StepField, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class DatasetDecl:
    call: Call
    span: Span = field(compare=False)


@dataclass(frozen=True)
class ObjectiveDecl:
    """`objective = expr`, or `objective = prior_expr then expr` (a posterior's stages)."""

    expr: Expr
    span: Span = field(compare=False)
    then: Expr | None = None


@dataclass(frozen=True)
class TrainBlock:
    assigns: tuple[Assign, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class ActionDecl:
    """`action inc[i in 0..D - 1] = increment(coord = i)`: one action, or a family."""

    name: str
    range: IndexRange | None
    call: Call
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class RewardDecl:
    """`reward = call` (R(x)) or `energy = call` (E(x), R = exp(-E)); tempered by a
    condition as `reward = call ** beta` (R^beta) or `energy = beta * call` (exp(-beta E)).
    `expr` is the right-hand side as written; `call` its registry call (None when the
    right-hand side has another shape: the checker says so)."""

    call: Call | None
    span: Span = field(compare=False)
    form: str = "reward"  # "reward" | "energy"
    temper: Name | None = None
    expr: Expr | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ConditionDecl:
    """`condition y : int(0, 9)` or `condition beta : real ~ uniform(lo = 0.5, hi = 2.0)`."""

    name: str
    type: TypeExpr
    prior: Call | None
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class PolicyDecl:
    direction: str  # "forward" | "backward"
    call: Call
    span: Span = field(compare=False)


Item = Union[
    DimsBlock, ScheduleDecl, StateDecl, SourceDecl, DataStateDecl, NetDecl, StepDecl,
    DatasetDecl, ObjectiveDecl, TrainBlock, ActionDecl, RewardDecl, PolicyDecl, ConditionDecl,
]


@dataclass(frozen=True)
class Model:
    name: str
    items: tuple[Item, ...]
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


# -- dumping ------------------------------------------------------------------------------


def dump(node, indent: int = 0) -> str:
    """Deterministic, indented text of an AST, with each node's `@line:col`."""
    lines: list[str] = []
    _dump(node, indent, lines, label="")
    return "\n".join(lines) + "\n"


def _dump(node, indent: int, out: list[str], label: str) -> None:
    pad = "  " * indent + (f"{label}: " if label else "")
    if node is None:
        out.append(pad + "-")
        return
    if isinstance(node, tuple):
        if not node:
            out.append(pad + "[]")
            return
        out.append(pad + "[")
        for item in node:
            _dump(item, indent + 1, out, "")
        out.append("  " * indent + "]")
        return
    if not hasattr(node, "__dataclass_fields__"):
        out.append(pad + repr(node))
        return
    scalars, children = [], []
    for f in fields(node):
        if f.name in ("span", "name_span", "var_span", "depth"):
            continue
        v = getattr(node, f.name)
        if hasattr(v, "__dataclass_fields__") or isinstance(v, tuple):
            children.append((f.name, v))
        elif not (f.name == "text" and isinstance(node, Num)):
            scalars.append(f"{f.name}={v!r}")
    head = f"{type(node).__name__} @{node.span}"
    if scalars:
        head += " " + " ".join(scalars)
    out.append(pad + head)
    for name, v in children:
        _dump(v, indent + 1, out, name)
