"""Chains and trees of explicit steps: the source (a prior, a data set or a point), the
terminal state, and every step unrolled per binding with its forward and backward
kernels, each kernel's rule run against the states it connects."""

from __future__ import annotations

from gfdsl.lang import ast
from gfdsl.lang.check.spec import EdgeInfo, KernelInfo, TransitionInfo
from gfdsl.lang.evaluate import Bad, uses_var
from gfdsl.library import REGISTRY
from gfdsl.library.registry import KernelUse


class Steps:
    # -- source and terminal --------------------------------------------------------------------

    def _source(self, d: ast.SourceDecl) -> None:
        n = len(self.diags)
        self._source_decl(d)
        self._source_bad = len(self.diags) > n  # rules that read the source skip it then

    def _source_decl(self, d: ast.SourceDecl) -> None:
        try:
            nid = self._ref(d.ref, self.scope)
        except Bad:
            return
        node = self.out.nodes[nid]
        node.role = "source"
        self.out.source_node = nid
        if d.value is not None:
            return self._point_source(d, node)
        if d.prior is None:
            if node.type.numel:
                self.error("E610", d.span, state=nid, type=str(node.type))
            return
        try:
            entry, args = self._call_args(d.prior, "prior", self.scope, refs=False, kinds=("prior", "dataset"))
        except Bad:
            return
        if entry.kind == "dataset":  # a bridge from one data set to another
            self._dataset_yields(entry, args, d.prior, nid)
            self.out.source_data = dict(entry=entry.name, args=args.model_dump(by_alias=True), span=d.prior.span)
            return
        if node.type.dtype not in entry.info["dtypes"]:
            ok = [e.name for e in REGISTRY.all("prior") if node.type.dtype in e.info["dtypes"]]
            self.error("E409", d.prior.span, prior=entry.name, type=f"{nid}, which is {node.type}",
                       hint=f"use {' or '.join(x + '()' for x in ok)}")
            return
        self._prior_kernel(node, entry, args, d.prior.span)

    def _point_source(self, d: ast.SourceDecl, node) -> None:
        """`source x = 0` or `source x = [0, 1]`: a point mass (log P = 0)."""
        try:
            v = self.ev.value(d.value, self.scope)
        except Bad:
            return
        n = node.type.numel
        vals = v if isinstance(v, list) else [v]
        if node.type.dtype != "real" or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in vals) \
                or len(vals) not in (1, n):
            self.error("E305", d.value.span, why=f"a point source of {node.id} ({node.type}) needs a number or "
                                                 f"a list of {n} numbers", hint="write e.g. `source x[0] = 0`")
            return
        entry = REGISTRY.get("prior", "point")
        args = entry.args.model_validate({"value": [float(x) for x in (vals * n if len(vals) == 1 else vals)]})
        self._prior_kernel(node, entry, args, d.value.span)

    def _prior_kernel(self, node, entry, args, span) -> None:
        self.out.kernels["prior"] = KernelInfo("prior", entry.name, args.model_dump(by_alias=True),
                                               entry.learned(args), tuple(sorted(entry.caps)), "prior", span)
        node.prior = "prior"

    def _data_state(self, d: ast.DataStateDecl) -> None:
        try:
            nid = self._ref(d.ref, self.scope)
        except Bad:
            return
        if nid == self.out.source_node:
            self.error("E507", d.span, message=f"{nid} is both the source and the data state",
                       hint="the data state is where forward trajectories end")
            return
        self.out.nodes[nid].role = "data"
        self.out.data_node = nid

    def _terminal(self, singles) -> None:
        """Without `data`, a model trained from a reward ends where its steps end: the one
        state that steps enter and none leaves."""
        if self.out.data_node is not None or "data" in singles:
            return
        if "dataset" in singles or "reward" not in singles:
            self.error("E206", self.model.name_span, what="data state", example="`data x`")
            return
        steps = [e for e in self.out.edges if e.kind == "step"]
        sinks = sorted({e.dst for e in steps} - {e.src for e in steps})
        if len(sinks) == 1:
            self.out.data_node = sinks[0]
            self.out.nodes[sinks[0]].role = "terminal"
        elif steps:
            self.error("E206", self.model.name_span, what="terminal state",
                       example=f"`data {sinks[0]}` (the steps end in {', '.join(sinks[:3])})" if sinks
                       else "`data x` where forward trajectories end")

    # -- steps ------------------------------------------------------------------------------------------

    def _step(self, d: ast.StepDecl, tid: str) -> None:
        text = self.src.text[d.src.span.start:(d.given[-1] if d.given else d.loop or d.dst).span.end]
        var = d.loop.var if d.loop else None
        try:
            rng = self._range(d.loop, self.scope) if d.loop else None
        except Bad:
            return
        self.out.transitions[tid] = TransitionInfo(
            tid, " ".join(text.split()), self._text(d.src.span), self._text(d.dst.span), var,
            rng[0] if rng else None, rng[1] if rng else None, d.span,
            {f.direction: self._text(f.call.span) for f in d.fields})
        fields: dict[str, ast.StepField] = {}
        for f in d.fields:
            if f.direction in fields:
                self.error("E508", f.span, direction=f.direction)
            else:
                fields[f.direction] = f
        for direction in ("forward", "backward"):
            if direction not in fields:
                self.error("E503", d.span, direction=direction)
        bindings = [{var: i} for i in range(rng[0], rng[1] + 1)] if rng else [{}]
        cache: dict = {}  # (direction, key of evaluated args) -> kernel id
        # once per step, not per unrolled edge: which kernels read the index variable
        cache["depends"] = {id(f.call): var is not None and uses_var(f.call, var) for f in fields.values()}
        reported: set = set()
        for b in bindings:
            scope = self.scope.with_vars(**b)
            try:
                src = self._ref(d.src, scope)
                dst = self._ref(d.dst, scope)
                ctx = [self._ref(g, scope) for g in d.given]
            except Bad:
                return  # one report per step is enough
            kids = {}
            for direction, f in fields.items():
                try:
                    kids[direction] = self._kernel(f, direction, tid, var, b, scope, src, dst, ctx, len(bindings),
                                                   cache, reported, kids)
                except Bad:
                    return
            self.out.edges.append(EdgeInfo(src, dst, "step", tid, dict(b), kids.get("forward"), kids.get("backward"),
                                           d.span))
            for c in ctx:
                self.out.edges.append(EdgeInfo(c, dst, "context", tid, dict(b), None, None, d.span))

    def _kernel(self, f: ast.StepField, direction, tid, var, binding, scope, src, dst, ctx, n_steps,
                cache, reported, kids) -> str:
        call = f.call
        if call.name == "inverse":
            return self._inverse(f, direction, tid, kids)
        depends = cache["depends"][id(call)]
        key = (direction, binding.get(var) if depends else None)
        if key in cache:
            kid = cache[key]
        else:
            entry, args = self._call_args(call, "kernel", scope)
            if direction not in entry.directions:
                allowed = next(iter(entry.directions))
                self.error("E603", call.name_span, kernel=call.name, allowed=allowed, direction=direction,
                           hint=f"use it as `{allowed} = {call.name}(...)`")
                raise Bad()
            kid = f"{tid}.{direction}" + (f"[{var}={binding[var]}]" if depends else "")
            cache[key] = kid
            self.out.kernels[kid] = KernelInfo(kid, entry.name, args.model_dump(by_alias=True), entry.learned(args),
                                               tuple(sorted(entry.caps)), direction, call.span)
            self.kernel_entries[kid] = (entry, args)
        entry, args = self.kernel_entries[kid]
        if entry.rule is None:
            return kid
        nodes = self.out.nodes
        inp, out = (src, dst) if direction == "forward" else (dst, src)
        use = KernelUse(direction, nodes[inp].type, nodes[out].type, inp, out,
                        sum(nodes[c].type.net_width for c in ctx) if direction == "forward" else 0,
                        *self._use_facts(), n_steps, *self._use_tail())
        for p in entry.rule(use, args):
            if (p.code, p.fields.get("name") or p.arg) in reported:
                continue  # one report per problem and step, not one per unrolled edge
            reported.add((p.code, p.fields.get("name") or p.arg))
            spans = {a.name: a.value.span for a in call.args if a.name}
            self.error(p.code, spans.get(p.arg, call.span), **p.fields)
        return kid

    def _use_facts(self) -> tuple:
        """What every kernel rule reads of the nets and schedules (KernelUse.nets,
        .schedules): built once, when the first step is checked, all being declared."""
        if getattr(self, "_facts", None) is None:
            self._facts = ({n: v["facts"] for n, v in self.out.nets.items()},
                           {n: v["length"] for n, v in self.out.schedules.items()})
        return self._facts

    def _use_tail(self) -> tuple:
        """KernelUse's data, source_point and rewarded: the same for every step, so once
        the source and data states are checked (they are, before any step)."""
        if getattr(self, "_tail", None) is None:
            prior = self.out.kernels.get("prior")
            self._tail = (self.out.nodes[self.out.data_node].type if self.out.data_node else None,
                          tuple(prior.args["value"]) if prior is not None and prior.entry == "point" else
                          () if getattr(self, "_source_bad", False) else None,
                          self._rewarded)
        return self._tail

    def _inverse(self, f: ast.StepField, direction: str, tid: str, kids: dict) -> str:
        call = f.call
        if direction != "backward":
            self.error("E607", call.span, message="inverse() can only be a backward kernel",
                       hint="write `backward = inverse(forward)`")
            raise Bad()
        args = call.args
        if len(args) != 1 or args[0].name is not None or not isinstance(args[0].value, ast.Name) \
                or args[0].value.name != "forward":
            self.error("E607", call.span, message="inverse() takes exactly one argument, `forward`",
                       hint="write `backward = inverse(forward)`")
            raise Bad()
        fwd = kids.get("forward")
        if fwd is None:
            raise Bad()  # the forward kernel had an error, or is missing (E503)
        fk = self.out.kernels[fwd]
        if "bijective" not in fk.caps:
            bij = [e.name + "()" for e in REGISTRY.all("kernel") if "bijective" in e.caps and e.name != "inverse"]
            self.error("E601", call.span, kernel=fk.entry,
                       hint=f"use a bijective forward kernel ({', '.join(bij)}) or give a backward kernel of its own")
            raise Bad()
        kid = "inv:" + fwd
        if kid not in self.out.kernels:
            self.out.kernels[kid] = KernelInfo(kid, "inverse", {}, False, ("bijective", "deterministic"), "backward",
                                               call.span, inverse_of=fwd)
        return kid
