"""Declarations every model shares: names (one definition each), dims with command-line
overrides, schedules, states unrolled per index with their value types, and nets."""

from __future__ import annotations

from gfdsl.errors import diag, did_you_mean
from gfdsl.lang import ast
from gfdsl.lang.check.spec import MAX_NUMEL, MAX_STATES, NodeInfo, node_id
from gfdsl.lang.evaluate import Bad, Scope, uses_var
from gfdsl.lang.source import Span
from gfdsl.library.registry import VALUE_TYPES, NetFacts, StateType


class Declarations:
    def _declarations(self, items) -> None:
        seen: dict[str, Span] = {}

        def declare(name: str, span: Span) -> None:
            if name in seen:
                self.error("E202", span, name=name, line=seen[name].line)
                self.duplicates.add(span)
            else:
                seen[name] = span

        for it in items:
            if isinstance(it, ast.DimsBlock):
                for a in it.assigns:
                    declare(a.name, a.name_span)
            elif isinstance(it, ast.ScheduleDecl):
                declare(it.name, it.name_span)
                self.scope.schedules.add(it.name)
            elif isinstance(it, ast.StateDecl):
                declare(it.name, it.name_span)
                self.scope.states.add(it.name)
            elif isinstance(it, ast.NetDecl):
                declare(it.name, it.name_span)
                self.scope.nets[it.name] = None  # range filled in by _net
            elif isinstance(it, ast.ActionDecl):
                declare(it.name, it.name_span)
            elif isinstance(it, ast.ConditionDecl):
                declare(it.name, it.name_span)
                self.scope.conditions.add(it.name)

    def _dims(self, block: ast.DimsBlock) -> None:
        for a in block.assigns:
            if a.name_span in self.duplicates:
                continue
            if a.name in self.overrides:
                v = self.overrides[a.name]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    self.diags.append(diag("E706", None, None, path=self.src.path, text=f"{a.name}={v}",
                                           why=f"dim '{a.name}' must be a number"))
                    self.scope.poisoned.add(a.name)
                    continue
                self.scope.dims[a.name] = v
                continue
            try:
                v = self.ev.value(a.value, self.scope)
            except Bad:
                self.scope.poisoned.add(a.name)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.error("E305", a.value.span, why=f"dim '{a.name}' must be a number", hint="")
                self.scope.poisoned.add(a.name)
                continue
            self.scope.dims[a.name] = v
        self.out.dims = dict(self.scope.dims)

    def _unknown_overrides(self) -> None:
        from gfdsl.library.settings import TrainSettings

        declared = set(self.scope.dims) | self.scope.poisoned
        for name in sorted(set(self.overrides) - declared - set(TrainSettings.model_fields)):
            self.diags.append(diag("E706", None, None, path=self.src.path, text=f"{name}={self.overrides[name]}",
                                   why=f"the model has no dim named '{name}', and there is no train setting "
                                       f"'{name}'"))

    def _schedule(self, d: ast.ScheduleDecl) -> None:
        try:
            entry, args = self._call_args(d.call, "schedule", self.scope, refs=False)
        except Bad:
            self.scope.poisoned.add(d.name)
            return
        self.out.schedules[d.name] = dict(entry=entry.name, args=args.model_dump(by_alias=True), span=d.span,
                                          length=args.steps)

    def _state(self, d: ast.StateDecl) -> None:
        try:
            rng = self._range(d.range, self.scope) if d.range else None
        except Bad:
            return
        if rng and len(self.out.nodes) + rng[1] - rng[0] + 1 > MAX_STATES:
            self.error("E708", d.span, n=f"{len(self.out.nodes) + rng[1] - rng[0] + 1:,}", limit=f"{MAX_STATES:,}")
            return
        self.families[d.name] = dict(range=rng, decl=d)
        idxs = range(rng[0], rng[1] + 1) if rng else [None]
        shape_uses_var = d.range is not None and any(uses_var(e, d.range.var) for e in d.type.shape + d.type.params)
        cached = None
        for i in idxs:
            if cached is None or shape_uses_var:
                scope = self.scope.with_vars(**{d.range.var: i}) if d.range else self.scope
                try:
                    cached = self._type(d.type, scope)
                except Bad:
                    self.families.pop(d.name, None)
                    return
            nid = node_id(d.name, i)
            self.out.nodes[nid] = NodeInfo(nid, d.name, i, cached, span=d.span)

    def _type(self, t: ast.TypeExpr, scope: Scope) -> StateType:
        if t.name not in VALUE_TYPES:
            self.error("E308", t.name_span, name=t.name, hint=did_you_mean(t.name, VALUE_TYPES))
            raise Bad()
        want = VALUE_TYPES[t.name]
        if len(t.params) != want:
            self.error("E305", t.span, why=f"type '{t.name}' takes {want} parameter{'s' * (want != 1)}, "
                                             f"got {len(t.params)}",
                       hint="write `cat(K)[...]` with K classes" if t.name == "cat" else f"write `{t.name}[...]`")
            raise Bad()
        params = tuple(self.ev.integer(p, scope, "a type parameter") for p in t.params)
        if t.name == "seq" and params[0] < 1:
            self.error("E401", t.params[0].span, what="the vocabulary size", value=params[0],
                       hint="seq(V)[L] has V tokens")
            raise Bad()
        if t.name == "cat" and params[0] < 2:
            self.error("E401", t.params[0].span, what="the number of classes", value=params[0],
                       hint="a categorical needs at least 2 classes")
            raise Bad()
        if not t.shape:
            self.error("E305", t.span, why="a state type needs a shape", hint=f"write e.g. `{t.name}[2]`")
            raise Bad()
        shape = []
        for e in t.shape:
            v = self.ev.integer(e, scope, "a size")
            if v < 0 or (v == 0 and not uses_var(e, next(iter(scope.vars), ""))):
                self.error("E401", e.span, what="a size", value=v, hint="sizes count values: 1, 2, 3, ...")
                raise Bad()
            shape.append(v)
        st = StateType(t.name, params, tuple(shape))
        if st.numel > MAX_NUMEL:
            self.error("E407", t.span, what="the state's size", value=f"{st.numel:,}", limit=f"{MAX_NUMEL:,}",
                       hint="gfdsl states are vectors or small images")
            raise Bad()
        return st

    def _net(self, d: ast.NetDecl) -> None:
        try:
            rng = self._range(d.range, self.scope) if d.range else None
        except Bad:
            self.scope.poisoned.add(d.name)
            return
        self.scope.nets[d.name] = rng
        idxs = range(rng[0], rng[1] + 1) if rng else [None]
        # a family whose arguments do not mention its index (`net st[k in 1..K] = mlp(...)`)
        # is evaluated and validated once, not once per member
        same = d.range is None or not uses_var(d.call, d.range.var)
        done = None
        for i in idxs:
            if done is None or not same:
                scope = self.scope.with_vars(**{d.range.var: i}) if d.range else self.scope
                try:
                    entry, args = self._call_args(d.call, "net", scope, refs=False)
                except Bad:
                    self.scope.poisoned.add(d.name)
                    return
                dumped = args.model_dump(by_alias=True)
                if not dumped.get("cond"):  # an unconditional net's IR carries no condition settings
                    dumped.pop("cond", None), dumped.pop("cond_embed", None)
                done = entry, args, dumped, NetFacts(entry.name, *entry.info["facts"](args))
            entry, args, dumped, facts = done
            nid = node_id(d.name, i)
            for c in getattr(args, "cond", ()):
                self.out.conditions[c.name]["readers"].append(nid)
            self.out.nets[nid] = dict(entry=entry.name, args=dict(dumped), family=d.name, facts=facts, span=d.span)
