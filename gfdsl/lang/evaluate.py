"""Evaluation of constant expressions in a spec: dims, sizes, arguments, indices.

Values are int, float, str, bool, lists of them, or `Ref`s to nets and schedules. All
arithmetic is guarded: no division by zero, no runaway `10 ** 10 ** 10`, no integer
beyond 2**62, no NaN or infinity. Errors are recorded as diagnostics and raise `Bad`
so the caller can skip what depends on the bad value without cascading messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gfdsl.lang import ast
from gfdsl.errors import Diagnostic, article, diag, did_you_mean
from gfdsl.library.registry import Ref
from gfdsl.lang.source import Source

INT_LIMIT = 2**62


class Bad(Exception):
    """A diagnostic was recorded; the value is unusable."""


@dataclass
class Scope:
    """What names mean while evaluating one expression."""

    dims: dict[str, int | float]
    vars: dict[str, int] = field(default_factory=dict)
    schedules: set[str] = field(default_factory=set)
    nets: dict[str, tuple[int, int] | None] = field(default_factory=dict)  # family -> (lo, hi) or None
    states: set[str] = field(default_factory=set)
    poisoned: set[str] = field(default_factory=set)  # declared, but their definition had an error
    conditions: set[str] = field(default_factory=set)

    def with_vars(self, **vs: int) -> "Scope":
        return Scope(self.dims, {**self.vars, **vs}, self.schedules, self.nets, self.states, self.poisoned,
                     self.conditions)


class Evaluator:
    def __init__(self, source: Source, diags: list[Diagnostic]):
        self.source = source
        self.diags = diags

    def fail(self, code: str, span, **kw) -> Bad:
        self.diags.append(diag(code, self.source, span, **kw))
        return Bad()

    # -- entry points -----------------------------------------------------------------

    def value(self, e: ast.Expr, scope: Scope, refs: bool = False):
        """Evaluate `e`; names of nets and schedules become Refs when `refs` is true."""
        if isinstance(e, ast.Num):
            if isinstance(e.value, float) and not math.isfinite(e.value):
                raise self.fail("E407", e.span, what="this number", value=e.text, limit="1.8e308",
                                hint="numbers must be finite")
            if isinstance(e.value, int) and abs(e.value) > INT_LIMIT:
                raise self.fail("E407", e.span, what="this number", value=_short(e.value), limit="2**62",
                                hint="use a smaller value")
            return e.value
        if isinstance(e, (ast.Str, ast.Bool)):
            return e.value
        if isinstance(e, ast.Name):
            return self._name(e, scope, refs)
        if isinstance(e, ast.Index):
            return self._index(e, scope, refs)
        if isinstance(e, ast.ListLit):
            return [self.value(x, scope, refs) for x in e.items]
        if isinstance(e, ast.Neg):
            v = self.number(e.operand, scope)
            return -v
        if isinstance(e, ast.BinOp):
            return self._binop(e, scope)
        if isinstance(e, ast.Call):
            raise self.fail("E307", e.span, hint="calls name kernels, nets and objectives; here a value is needed")
        raise AssertionError(type(e))

    def number(self, e: ast.Expr, scope: Scope) -> int | float:
        v = self.value(e, scope)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail("E305", e.span, why=f"expected a number, got {_describe(v)}", hint="")
        return v

    def integer(self, e: ast.Expr, scope: Scope, what: str) -> int:
        v = self.number(e, scope)
        if isinstance(v, float):
            if not v.is_integer():
                raise self.fail("E305", e.span, why=f"{what} must be an integer, got {v}", hint="")
            v = int(v)
        return v

    # -- names ---------------------------------------------------------------------------

    def _name(self, e: ast.Name, scope: Scope, refs: bool):
        n = e.name
        if n in scope.poisoned and n not in scope.vars:
            raise Bad()  # already reported where it was defined
        if n in scope.vars:
            return scope.vars[n]
        if n in scope.dims:
            return scope.dims[n]
        if n in scope.conditions:  # (a net's `cond = [y]`; arithmetic refuses it as not a number)
            return Ref("condition", n)
        if n in scope.schedules and refs:
            return Ref("schedule", n)
        if n in scope.nets and refs:
            if scope.nets[n] is not None:
                lo, hi = scope.nets[n]
                raise self.fail("E205", e.span, message=f"net '{n}' is an indexed family ({lo}..{hi})",
                                hint=f"pick one element, e.g. {n}[{lo}]")
            return Ref("net", n)
        if n in scope.schedules or n in scope.nets or n in scope.states:
            kind = "schedule" if n in scope.schedules else "net" if n in scope.nets else "state"
            raise self.fail("E204", e.span, name=n, actual=article(kind), expected="a value",
                            hint="only dims and index variables may be used in arithmetic")
        cands = set(scope.vars) | set(scope.dims) | scope.conditions | (
            scope.schedules | set(scope.nets) if refs else set())
        raise self.fail("E201", e.span, name=n, hint=did_you_mean(n, cands) or "declare it in `dims { ... }`")

    def _index(self, e: ast.Index, scope: Scope, refs: bool):
        if e.name in scope.poisoned:
            raise Bad()
        rng = scope.nets.get(e.name, "absent")
        if rng == "absent" or not refs:
            if e.name in scope.dims or e.name in scope.vars:
                raise self.fail("E205", e.span, message=f"'{e.name}' is a number and cannot be indexed", hint="")
            if e.name in scope.nets or e.name in scope.states or e.name in scope.schedules:
                kind = "net" if e.name in scope.nets else "state" if e.name in scope.states else "schedule"
                raise self.fail("E204", e.name_span, name=e.name, actual=article(kind), expected="a value", hint="")
            raise self.fail("E201", e.name_span, name=e.name,
                            hint=did_you_mean(e.name, set(scope.nets) | set(scope.dims)))
        if rng is None:
            raise self.fail("E205", e.span, message=f"net '{e.name}' is not indexed",
                            hint=f"write `{e.name}`, or declare `net {e.name}[k in 1..K] = ...`")
        i = self.integer(e.index, scope, "an index")
        lo, hi = rng
        if not lo <= i <= hi:
            raise self.fail("E405", e.span, ref=f"{e.name}[{i}]", family=e.name, range=f"{lo}..{hi}",
                            hint=_binding_hint(scope))
        return Ref("net", f"{e.name}[{i}]")

    # -- arithmetic -------------------------------------------------------------------------

    def _binop(self, e: ast.BinOp, scope: Scope):
        a = self.number(e.left, scope)
        b = self.number(e.right, scope)
        op = e.op
        try:
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif op == "/":
                if b == 0:
                    raise self.fail("E305", e.span, why="division by zero", hint="")
                r = a // b if isinstance(a, int) and isinstance(b, int) and a % b == 0 else a / b
            elif op == "%":
                if b == 0:
                    raise self.fail("E305", e.span, why="modulo by zero", hint="")
                r = a % b
            else:  # "**": refuse results too large to compute or hold
                if a not in (0, 1, -1) and abs(b) * math.log2(max(abs(a), 2)) > 62:
                    raise self.fail("E407", e.span, what="this power", value=f"{_short(a)} ** {_short(b)}",
                                    limit="2**62", hint="use a smaller value")
                if a == 0 and b < 0:
                    raise self.fail("E305", e.span, why="zero to a negative power", hint="")
                r = a**b
                if isinstance(a, int) and isinstance(b, int) and b < 0:
                    r = float(r)
        except OverflowError:
            raise self.fail("E407", e.span, what="this value", value="too large", limit="2**62", hint="") from None
        if isinstance(r, float) and not math.isfinite(r):
            raise self.fail("E305", e.span, why=f"the result is not finite ({r})", hint="")
        if isinstance(r, int) and abs(r) > INT_LIMIT:
            raise self.fail("E407", e.span, what="this value", value=_short(r), limit="2**62",
                            hint="use a smaller value")
        return r


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 20 else s[:8] + "..." + f"({len(s)} digits)"


def _describe(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, list):
        return "a list"
    if isinstance(v, Ref):
        return f"the {v.kind} '{v.name}'"
    return repr(v)


def _binding_hint(scope: Scope) -> str:
    if scope.vars:
        return "with " + ", ".join(f"{k} = {v}" for k, v in sorted(scope.vars.items()))
    return ""


def uses_var(e, var: str) -> bool:
    """Does expression (or call) `e` mention the name `var`? (AST depth is bounded.)"""
    if isinstance(e, ast.Name):
        return e.name == var
    if isinstance(e, ast.Index):
        return uses_var(e.index, var)
    if isinstance(e, ast.ListLit):
        return any(uses_var(x, var) for x in e.items)
    if isinstance(e, ast.Neg):
        return uses_var(e.operand, var)
    if isinstance(e, ast.BinOp):
        return uses_var(e.left, var) or uses_var(e.right, var)
    if isinstance(e, ast.Call):
        return any(uses_var(a.value, var) for a in e.args)
    return False
