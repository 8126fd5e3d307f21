"""The checker's shared machinery: diagnostics, registry calls validated against their
pydantic schemas, index ranges and state references. Every rule module of the checker
(declare, steps, actions, targets, objective) is a mixin over this base."""

from __future__ import annotations

from pydantic import ValidationError

from gfdsl.errors import Diagnostic, article, diag, did_you_mean
from gfdsl.lang import ast
from gfdsl.lang.check.spec import MAX_STATES, CheckedSpec, node_id
from gfdsl.lang.evaluate import Bad, Evaluator, Scope
from gfdsl.lang.source import Source, Span
from gfdsl.library import REGISTRY


class Base:
    def __init__(self, source: Source, model: ast.Model, overrides: dict | None = None, inputs=None):
        self.src = source
        self.inputs = inputs  # gfdsl.files.Inputs: where the files the spec names are (None: beside it)
        self.model = model
        self.overrides = dict(overrides or {})
        self.diags: list[Diagnostic] = []
        self.ev = Evaluator(source, self.diags)
        self.out = CheckedSpec(source, model.name)
        self.scope = Scope(dims={})
        self.families: dict[str, dict] = {}  # state family -> {range, decl}
        self.kernel_entries: dict = {}  # kernel id -> (Entry, validated args)
        self.duplicates: set[Span] = set()  # name spans of second definitions (skipped)

    def error(self, code: str, span: Span | None, **kw) -> None:
        self.diags.append(diag(code, self.src, span, **kw))

    def _text(self, span: Span) -> str:
        return " ".join(self.src.text[span.start:span.end].split())

    # -- registry calls ------------------------------------------------------------------------

    def _call_args(self, call: ast.Call, kind: str, scope: Scope, refs: bool = True, kinds: tuple = ()):
        """Resolve `call` as a registry entry of `kind` (or of one of `kinds`) and validate
        its arguments; returns (entry, validated args)."""
        entry = None
        for k in kinds or (kind,):
            entry = entry or REGISTRY.get(k, call.name)
        if entry is None:
            other = REGISTRY.kind_of(call.name)
            if other is not None:
                hint = did_you_mean(call.name, REGISTRY.names(kind))
                if other == "energy" and kind == "reward" or other == "reward" and kind == "energy":
                    hint = f"write `{other} = {call.name}(...)`"
                self.error("E204", call.name_span, name=call.name, actual=article(other), expected=article(kind),
                           hint=hint)
            else:
                self.error("E203", call.name_span, kind=kind, name=call.name,
                           hint=_unknown_hint(call.name, kind))
            raise Bad()
        values, spans = {}, {}
        ok = True
        for a in call.args:
            if a.name is None:
                self.error("E304", a.span, callee=call.name)
                ok = False
                continue
            if a.name in values or a.name in spans:
                self.error("E306", a.name_span, name=a.name)
                ok = False
                continue
            spans[a.name] = a
            try:
                values[a.name] = self.ev.value(a.value, scope, refs=refs)
            except Bad:
                ok = False
        if not ok:
            raise Bad()
        return entry, self._validate(entry.args, values, spans, call.name, call.name_span)

    def _validate(self, model, values: dict, spans: dict, callee: str, span: Span):
        try:
            return model.model_validate(values)
        except ValidationError as e:
            names = [f.alias or n for n, f in model.model_fields.items()]
            for err in e.errors():
                loc = err["loc"]
                key = str(loc[0]) if loc else None
                arg = spans.get(key)
                msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
                if err["type"] == "missing":
                    self.error("E302", span, callee=callee, name=key)
                elif err["type"] == "extra_forbidden":
                    self.error("E301", arg.name_span if arg else span, callee=callee, name=key,
                               hint=did_you_mean(key, names) if names else f"{callee}() takes no arguments")
                elif key is None:
                    self.error("E305", span, why=f"{callee}(): {msg}", hint="")
                else:
                    where = ".".join(str(x) for x in loc)
                    self.error("E303", arg.value.span if arg else span, name=where, callee=callee, why=msg,
                               hint=_choices_hint(err))
            raise Bad() from None

    # -- ranges and state references -------------------------------------------------------------

    def _range(self, r: ast.IndexRange, scope: Scope) -> tuple[int, int]:
        lo = self.ev.integer(r.lo, scope, "a range bound")
        hi = self.ev.integer(r.hi, scope, "a range bound")
        if lo > hi:
            self.error("E408", r.span, range=f"{lo}..{hi}")
            raise Bad()
        if hi - lo + 1 > MAX_STATES:
            self.error("E708", r.span, n=f"{hi - lo + 1:,}", limit=f"{MAX_STATES:,}")
            raise Bad()
        return lo, hi

    def _ref(self, r: ast.StateRef, scope: Scope) -> str:
        fam = self.families.get(r.name)
        if fam is None:
            if r.name in self.scope.states:
                raise Bad()  # the family itself had an error
            other = ("net" if r.name in self.scope.nets else "schedule" if r.name in self.scope.schedules
                     else "dim" if r.name in self.scope.dims else None)
            if other:
                self.error("E204", r.name_span, name=r.name, actual=article(other), expected="a state", hint="")
            else:
                self.error("E201", r.name_span, name=r.name,
                           hint=did_you_mean(r.name, self.scope.states) or "declare it with `state NAME : real[D]`")
            raise Bad()
        rng = fam["range"]
        if rng is None:
            if r.index is not None:
                self.error("E205", r.span, message=f"state '{r.name}' is not indexed",
                           hint=f"write `{r.name}`, or declare `state {r.name}[i in 0..N] : ...`")
                raise Bad()
            return r.name
        if r.index is None:
            self.error("E205", r.span, message=f"state '{r.name}' is an indexed family ({rng[0]}..{rng[1]})",
                       hint=f"pick one state, e.g. {r.name}[{rng[0]}]")
            raise Bad()
        i = self.ev.integer(r.index, scope, "an index")
        if not rng[0] <= i <= rng[1]:
            bind = ", ".join(f"{k} = {v}" for k, v in scope.vars.items())
            self.error("E405", r.span, ref=f"{r.name}[{i}]", family=r.name, range=f"{rng[0]}..{rng[1]}",
                       hint=(f"with {bind}; " if bind else "") + "adjust the step's range or the index")
            raise Bad()
        return node_id(r.name, i)


def _choices_hint(err: dict) -> str:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f"choose {ctx['expected']}"
    return ""


def dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        k = (d.code, d.message, d.span)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


def _unknown_hint(name: str, kind: str) -> str:
    """E203's hint: a close name, else the plugins loaded and how to load one."""
    close = did_you_mean(name, REGISTRY.names(kind))
    if close.startswith("did you mean"):
        return close
    loaded = ", ".join(REGISTRY.sources()) or "none"
    return (f"{close}; plugins loaded: {loaded} (a plugin adds entries: `--plugin MODULE`, or an installed "
            "package with a `gfdsl.plugins` entry point)")
