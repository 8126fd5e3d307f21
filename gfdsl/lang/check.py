"""The checker: AST -> CheckedSpec, or every error at once, sorted by position.

It resolves names (with did-you-mean), evaluates dims (with command-line overrides),
unrolls indexed state families and steps, validates every registry call's arguments
against its pydantic model, matches shapes (state types, net sizes, schedule lengths,
the data set) and checks capabilities (inverse needs a bijection, tbc needs a learned
P_B, mle needs one trajectory per data point, every learned policy is trained). It
imports neither torch nor networkx; gfdsl.ir builds the graph from its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from gfdsl.lang import ast
from gfdsl.lang.check_reward import RewardChecks
from gfdsl.errors import Diagnostic, GfdslError, diag, did_you_mean
from gfdsl.lang.evaluate import Bad, Evaluator, Scope, uses_var
from gfdsl.library import REGISTRY
from gfdsl.library.registry import VALUE_TYPES, KernelUse, NetFacts, StateType
from gfdsl.library.settings import RewardTrainSettings, TrainSettings
from gfdsl.lang.source import NO_SPAN, Source, Span

MAX_STATES = 100_000  # unrolled states in one model
MAX_NUMEL = 1 << 24  # values in one state


@dataclass
class NodeInfo:
    id: str  # "x[3]" or "z1"
    family: str
    index: int | None
    type: StateType
    role: str = "latent"  # source | data | latent
    span: Span = NO_SPAN
    prior: str | None = None  # kernel id of the source's prior


@dataclass
class KernelInfo:
    id: str
    entry: str
    args: dict
    learned: bool
    caps: tuple[str, ...]
    role: str  # forward | backward | prior
    span: Span
    inverse_of: str | None = None


@dataclass
class EdgeInfo:
    src: str
    dst: str
    kind: str  # step | context
    transition: str
    binding: dict
    forward: str | None
    backward: str | None
    span: Span


@dataclass
class TransitionInfo:
    id: str  # "step1"
    text: str  # the header as written: "x[t] -> x[t - 1] for t in 1..T"
    src: str  # "x[t]"
    dst: str
    var: str | None
    lo: int | None
    hi: int | None
    span: Span
    calls: dict = field(default_factory=dict)  # direction -> the kernel call as written


@dataclass
class CheckedSpec:
    source: Source
    name: str
    dims: dict = field(default_factory=dict)
    schedules: dict = field(default_factory=dict)  # name -> {entry, args, span, length}
    nets: dict = field(default_factory=dict)  # name -> {entry, args, family, facts, span}
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    kernels: dict[str, KernelInfo] = field(default_factory=dict)
    edges: list[EdgeInfo] = field(default_factory=list)
    transitions: dict[str, TransitionInfo] = field(default_factory=dict)
    objective: list[dict] = field(default_factory=list)  # [{coef, term, args, span}]
    dataset: dict | None = None
    train: dict = field(default_factory=dict)
    source_node: str | None = None
    data_node: str | None = None
    kind: str = "data"  # data | reward (gfdsl.check_reward)
    reward: dict | None = None  # {entry, args, span}
    policies: dict = field(default_factory=dict)  # forward/backward -> {entry, args, learned, span}
    actions: list = field(default_factory=list)  # [{id, entry, args, span}], moves then exit
    space: dict | None = None  # facts of the discrete space (sizes, encoding, moves)


def node_id(family: str, index: int | None) -> str:
    return family if index is None else f"{family}[{index}]"


class Checker(RewardChecks):
    def __init__(self, source: Source, model: ast.Model, overrides: dict[str, int] | None = None):
        self.src = source
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

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> CheckedSpec:
        items = self.model.items
        self._declarations(items)
        for it in items:
            if isinstance(it, ast.DimsBlock):
                self._dims(it)
        for name in sorted(set(self.overrides) - set(self.scope.dims)):
            self.diags.append(diag("E706", None, None, path=self.src.path, text=f"{name}={self.overrides[name]}",
                                   why=f"the model has no dim named '{name}'"))
        for kind, check in ((ast.ScheduleDecl, self._schedule), (ast.StateDecl, self._state),
                            (ast.NetDecl, self._net)):
            for it in items:
                if isinstance(it, kind) and it.name_span not in self.duplicates:
                    check(it)
        reward_model = any(isinstance(i, (ast.ActionDecl, ast.RewardDecl, ast.PolicyDecl)) for i in items)
        singles = self._singletons(items, reward_model)
        if reward_model:
            self._reward_model(items, singles)
        else:
            self._data_model(items, singles)
        if self.diags:
            raise GfdslError(_dedupe(self.diags))
        return self.out

    def _data_model(self, items, singles) -> None:
        """A model trained from data: source, data state, steps, data set, objective."""
        for n in self.out.nodes.values():
            if n.type.discrete_space:
                self.error("E612", n.span, what=f"the space type {n.type.dtype}", kind="reward-driven",
                           why="has no actions", hint="data-trained states are real, binary or cat; declare "
                                                      "`action`s, a `reward` and `policy`s for a reward-driven model")
                break
        if "source" in singles:
            self._source(singles["source"])
        if "data" in singles:
            self._data_state(singles["data"])
        for n, it in enumerate((i for i in items if isinstance(i, ast.StepDecl)), start=1):
            self._step(it, f"step{n}")
        if "dataset" in singles:
            self._dataset(singles["dataset"])
        if "objective" in singles:
            self._objective(singles["objective"])
        self._train(singles.get("train"))
        if not self.diags:
            self._capabilities()

    # -- declarations and singletons -----------------------------------------------------------

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

    def _singletons(self, items, reward_model: bool = False) -> dict:
        kinds = {ast.SourceDecl: "source", ast.DataStateDecl: "data", ast.DatasetDecl: "dataset",
                 ast.ObjectiveDecl: "objective", ast.TrainBlock: "train", ast.RewardDecl: "reward"}
        found: dict = {}
        for it in items:
            k = kinds.get(type(it))
            if k is None:
                continue
            if k in found:
                self.error("E207", it.span, name=k)
            else:
                found[k] = it
        if reward_model:  # gfdsl.check_reward says what such a model must have
            return found
        examples = {"source": ("source state", "`source x ~ normal()`"),
                    "data": ("data state", "`data x`"),
                    "dataset": ("dataset", '`dataset = toy2d(name = "moons")`'),
                    "objective": ("objective", "`objective = elbo`")}
        for k, (what, ex) in examples.items():
            if k not in found:
                self.error("E206", self.model.name_span, what=what, example=ex)
        if not any(isinstance(i, ast.StepDecl) for i in items):
            self.error("E206", self.model.name_span, what="step", example="`step a -> b { forward = ... backward = ... }`")
        return found

    # -- dims, schedules, states, nets -------------------------------------------------------------

    def _dims(self, block: ast.DimsBlock) -> None:
        for a in block.assigns:
            if a.name_span in self.duplicates:
                continue
            if a.name in self.overrides:
                self.scope.dims[a.name] = self.overrides[a.name]
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

    def _call_args(self, call: ast.Call, kind: str, scope: Scope, refs: bool = True):
        """Resolve `call` as a registry entry of `kind` and validate its arguments."""
        entry = REGISTRY.get(kind, call.name)
        if entry is None:
            other = REGISTRY.kind_of(call.name)
            if other is not None:
                self.error("E204", call.name_span, name=call.name, actual=other, expected=kind,
                           hint=did_you_mean(call.name, REGISTRY.names(kind)))
            else:
                self.error("E203", call.name_span, kind=kind, name=call.name,
                           hint=did_you_mean(call.name, REGISTRY.names(kind)))
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

    def _schedule(self, d: ast.ScheduleDecl) -> None:
        try:
            entry, args = self._call_args(d.call, "schedule", self.scope, refs=False)
        except Bad:
            self.scope.poisoned.add(d.name)
            return
        self.out.schedules[d.name] = dict(entry=entry.name, args=args.model_dump(by_alias=True), span=d.span,
                                          length=args.steps)

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
        for i in idxs:
            scope = self.scope.with_vars(**{d.range.var: i}) if d.range else self.scope
            try:
                entry, args = self._call_args(d.call, "net", scope, refs=False)
            except Bad:
                self.scope.poisoned.add(d.name)
                return
            nid = node_id(d.name, i)
            i_, o_, te = entry.info["facts"](args)
            self.out.nets[nid] = dict(entry=entry.name, args=args.model_dump(by_alias=True), family=d.name,
                                      facts=NetFacts(entry.name, i_, o_, te), span=d.span)

    # -- state references ----------------------------------------------------------------------------

    def _ref(self, r: ast.StateRef, scope: Scope) -> str:
        fam = self.families.get(r.name)
        if fam is None:
            if r.name in self.scope.states:
                raise Bad()  # the family itself had an error
            other = ("net" if r.name in self.scope.nets else "schedule" if r.name in self.scope.schedules
                     else "dim" if r.name in self.scope.dims else None)
            if other:
                self.error("E204", r.name_span, name=r.name, actual=other, expected="state", hint="")
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

    def _source(self, d: ast.SourceDecl) -> None:
        try:
            nid = self._ref(d.ref, self.scope)
        except Bad:
            return
        node = self.out.nodes[nid]
        node.role = "source"
        self.out.source_node = nid
        if d.prior is None:
            if node.type.numel:
                self.error("E610", d.span, state=nid, type=str(node.type))
            return
        try:
            entry, args = self._call_args(d.prior, "prior", self.scope, refs=False)
        except Bad:
            return
        if node.type.dtype not in entry.info["dtypes"]:
            ok = [e.name for e in REGISTRY.all("prior") if node.type.dtype in e.info["dtypes"]]
            self.error("E409", d.prior.span, prior=entry.name, type=f"{nid}, which is {node.type}",
                       hint=f"use {' or '.join(x + '()' for x in ok)}")
            return
        kid = "prior"
        self.out.kernels[kid] = KernelInfo(kid, entry.name, args.model_dump(by_alias=True), entry.learned(args),
                                           tuple(sorted(entry.caps)), "prior", d.prior.span)
        node.prior = kid

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

    def _text(self, span: Span) -> str:
        return " ".join(self.src.text[span.start:span.end].split())

    def _kernel(self, f: ast.StepField, direction, tid, var, binding, scope, src, dst, ctx, n_steps,
                cache, reported, kids) -> str:
        call = f.call
        if call.name == "inverse":
            return self._inverse(f, direction, tid, kids)
        depends = var is not None and uses_var(call, var)
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
                        sum(nodes[c].type.numel for c in ctx) if direction == "forward" else 0,
                        {n: v["facts"] for n, v in self.out.nets.items()},
                        {n: v["length"] for n, v in self.out.schedules.items()},
                        n_steps, nodes[self.out.data_node].type if self.out.data_node else None)
        spans = {a.name: a.value.span for a in call.args if a.name}
        for p in entry.rule(use, args):
            if (p.code, p.fields.get("name") or p.arg) in reported:
                continue  # one report per problem and step, not one per unrolled edge
            reported.add((p.code, p.fields.get("name") or p.arg))
            self.error(p.code, spans.get(p.arg, call.span), **p.fields)
        return kid

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

    # -- data set, objective, training ----------------------------------------------------------

    def _dataset(self, d: ast.DatasetDecl) -> None:
        try:
            entry, args = self._call_args(d.call, "dataset", self.scope, refs=False)
        except Bad:
            return
        self.out.dataset = dict(entry=entry.name, args=args.model_dump(by_alias=True), span=d.span)
        yields = entry.info["yields"](args)
        if yields is None or self.out.data_node is None:
            return
        t = self.out.nodes[self.out.data_node].type
        if not any(t.dtype == dt and t.classes == k and t.numel == n for dt, k, n in yields):
            got = " or ".join(f"{n} {dt if dt != 'cat' else f'cat({k})'} values" for dt, k, n in yields)
            need = f"{t} ({t.numel} {t.dtype if t.dtype != 'cat' else f'cat({t.classes})'} values)"
            hint = f"declare the data state as {yields[0][0] if yields[0][0] != 'cat' else f'cat({yields[0][1]})'}" \
                   f"[{yields[0][2]}]"
            self.error("E404", d.call.span, dataset=entry.name, got=got, state=self.out.data_node, need=need,
                       hint=hint)

    def _objective(self, d: ast.ObjectiveDecl, refs: bool = False) -> None:
        terms: list[dict] = []
        try:
            self._terms(d.expr, 1.0, terms, refs)
        except Bad:
            return
        if not terms:
            self.error("E608", d.expr.span, why="but it has no term")
            return
        self.out.objective = terms

    def _terms(self, e: ast.Expr, coef: float, out: list, refs: bool = False) -> None:
        """Flatten a linear combination of objective terms into [{coef, term, args}]."""
        if isinstance(e, ast.Name) and e.name not in self.scope.dims:
            e = ast.Call(e.name, (), e.span, e.span)
        if isinstance(e, ast.Call):
            entry, args = self._call_args(e, "objective", self.scope, refs=refs)
            out.append(dict(coef=coef, term=entry.name, args=args.model_dump(by_alias=True), span=e.span))
            return
        if isinstance(e, ast.Neg):
            return self._terms(e.operand, -coef, out, refs)
        if isinstance(e, ast.BinOp) and e.op in "+-":
            self._terms(e.left, coef, out, refs)
            return self._terms(e.right, coef if e.op == "+" else -coef, out, refs)
        if isinstance(e, ast.BinOp) and e.op in ("*", "/"):
            lc, rc = _has_term(e.left, self.scope), _has_term(e.right, self.scope)
            if lc and rc:
                self.error("E608", e.span, why="not a product of terms")
                raise Bad()
            if e.op == "/" and rc:
                self.error("E608", e.span, why="not a division by a term")
                raise Bad()
            const_e, term_e = (e.left, e.right) if rc else (e.right, e.left)
            c = self.ev.number(const_e, self.scope)
            if e.op == "/":
                if c == 0:
                    self.error("E305", e.span, why="division by zero", hint="")
                    raise Bad()
                c = 1 / c
            return self._terms(term_e, coef * c, out, refs)
        if isinstance(e, (ast.Num, ast.Name)) or (isinstance(e, ast.BinOp) and not _has_term(e, self.scope)):
            self.error("E608", e.span, why="but this part is a constant")
            raise Bad()
        self.error("E608", e.span, why=f"and '{_op(e)}' cannot combine terms")
        raise Bad()

    def _train(self, block: ast.TrainBlock | None, reward: bool = False) -> None:
        values, spans = {}, {}
        for a in block.assigns if block else ():
            if a.name in spans:
                self.error("E306", a.name_span, name=a.name)
                continue
            if not reward and a.name in set(RewardTrainSettings.model_fields) - set(TrainSettings.model_fields):
                self.error("E612", a.name_span, what=f"the setting '{a.name}'", kind="reward-driven",
                           why="trains from data", hint="exploration, replay and log Z settings need `action`s, "
                                                        "a `reward` and `policy`s")
                spans[a.name] = None
                continue
            spans[a.name] = ast.Arg(a.name, a.value, a.span, a.name_span)
            try:
                values[a.name] = self.ev.value(a.value, self.scope)
            except Bad:
                pass
        try:
            self.out.train = self._validate(RewardTrainSettings if reward else TrainSettings, values, spans, "train",
                                            block.span if block else self.model.name_span).model_dump()
        except Bad:
            pass

    # -- capabilities (run only on an otherwise clean spec) ----------------------------------------

    def _capabilities(self) -> None:
        ks = self.out.kernels
        steps = [e for e in self.out.edges if e.kind == "step"]
        fwd = [ks[e.forward] for e in steps if e.forward]
        bwd = [ks[e.backward] for e in steps if e.backward]
        learned_pf = any(k.learned for k in fwd) or (ks.get("prior") is not None and ks["prior"].learned)
        learned_pb = any(k.learned for k in bwd)
        trains: set[str] = set()
        for t in self.out.objective:
            entry = REGISTRY.get("objective", t["term"])
            args = entry.args.model_validate(t["args"])
            trains |= entry.info["trains"](args)
            needs = entry.info.get("needs")
            if needs == "learned_pb" and not learned_pb:
                fixed = sorted({k.entry + "()" for k in bwd})
                self.error("E602", t["span"], objective=t["term"],
                           why=f"every backward kernel is fixed ({', '.join(fixed)})",
                           hint="use a learned backward kernel such as learned_noising() or gaussian()")
            if needs == "reward":
                self.error("E611", t["span"], objective=t["term"],
                           hint="train from data with `elbo`, `mle` or `tbc`; a reward needs a reward-driven "
                                "model (`action`s, a `reward`, `policy`s)")
            if needs == "exact":
                stoch = next((k for k in bwd if "deterministic" not in k.caps), None)
                if stoch is not None:
                    self.error("E604", t["span"], objective=t["term"],
                               why=f"the backward kernel {stoch.entry}() is stochastic",
                               hint="use `elbo` (importance-weighted likelihood), or deterministic backward "
                                    "kernels (inverse(forward), truncate())")
        if not learned_pf and not learned_pb:
            self.error("E606", self.model.name_span)
            return
        span = self.out.objective[0]["span"] if self.out.objective else self.model.name_span
        if learned_pb and "pb" not in trains:
            self.error("E609", span, policy="the backward policy P_B",
                       hint='train it with `elbo(train = "both")` or add `tbc(k = 2)`')
        if learned_pf and "pf" not in trains:
            self.error("E609", span, policy="the forward policy P_F", hint="add `elbo` (or `mle`) to the objective")


def _has_term(e: ast.Expr, scope: Scope) -> bool:
    if isinstance(e, ast.Call):
        return True
    if isinstance(e, ast.Name):
        return e.name not in scope.dims
    if isinstance(e, ast.Neg):
        return _has_term(e.operand, scope)
    if isinstance(e, ast.BinOp):
        return _has_term(e.left, scope) or _has_term(e.right, scope)
    return False


def _op(e) -> str:
    return e.op if isinstance(e, ast.BinOp) else type(e).__name__.lower()


def _choices_hint(err: dict) -> str:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f"choose {ctx['expected']}"
    return ""


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        k = (d.code, d.message, d.span)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


def check(source: Source, model: ast.Model, overrides: dict[str, int] | None = None) -> CheckedSpec:
    """Check a parsed model; raise GfdslError with every problem found, sorted."""
    return Checker(source, model, overrides).run()
