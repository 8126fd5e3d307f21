"""The action notation: sugar for one step that grows a state by its actions.

`state s : int(0, H - 1)[D]`, `action ...` and `policy forward/backward = ...` become
the same record as any other model: a state family `s` (role "space") and the terminal
object `x`, one `move` step s -> s whose forward kernel is the forward policy (a masked
softmax over the moves and exit) and whose backward kernel is the backward policy over
the moves' derived inverses, and an `exit` step s -> x. The actions come from the closed
set of gfdsl.library.actions, so every inverse is known, and every move raises a level
function (sum of coordinates, set size, length): the state graph is a DAG by
construction, and nothing has to search a (possibly huge) state space for cycles.
"""

from __future__ import annotations

from gfdsl.lang import ast
from gfdsl.lang.check.spec import EdgeInfo, KernelInfo, NodeInfo, TransitionInfo
from gfdsl.lang.evaluate import Bad
from gfdsl.library.actions import count_text, encoding_size, max_moves, space_size

MAX_MOVES = 100_000  # actions in one model: the policy nets output one logit each
EXACT_LIMIT = 1 << 22  # states enumerated by exact evaluation
NOT_WITH_ACTIONS = {ast.SourceDecl: "a source", ast.DataStateDecl: "a data state", ast.StepDecl: "a step",
                    ast.DatasetDecl: "a dataset", ast.ScheduleDecl: "a schedule"}


class Actions:
    def _action_model(self, items) -> None:
        for it in items:
            what = NOT_WITH_ACTIONS.get(type(it))
            if what:
                self.error("E612", it.span, what=what, kind="models with explicit steps",
                           why="grows its state by actions",
                           hint="remove it: a model with actions starts at its space's empty state, ends by exit "
                                "and is trained from its reward")
        state = self._space_state(items)
        actions = self._actions(items, state)
        pol = self._policies(items, state, actions)
        if state is None or actions is None or pol is None:
            return
        self._space_facts(state, actions)
        self._desugar(state, actions, pol)

    def _space_state(self, items):
        decls = [it for it in items if isinstance(it, ast.StateDecl)]
        if not decls:
            self.error("E206", self.model.name_span, what="state", example="`state s : int(0, 7)[2]`")
            return None
        if len(decls) > 1:
            self.error("E510", decls[1].span, why=f"but it declares {len(decls)}",
                       hint="describe the object as one state (an int vector, a set or a sequence)")
            return None
        d = decls[0]
        if d.range is not None:
            self.error("E510", d.range.span, why="not an indexed family",
                       hint=f"write `state {d.name} : ...`; the actions say how it grows")
            return None
        node = self.out.nodes.get(d.name)
        if node is None:  # its type had an error, already reported
            return None
        t = node.type
        if not t.discrete_space:
            self.error("E410", d.type.span, what="a model with actions", state=d.name, type=str(t),
                       need="a discrete space: int(lo, hi)[D], set[N] or seq(V)[L]",
                       hint="e.g. `state s : int(0, 7)[2]` for an 8x8 hypergrid; real states move by steps")
            return None
        if len(t.shape) != 1:
            self.error("E410", d.type.span, what="a discrete space", state=d.name, type=str(t),
                       need="one size", hint=f"write `{t.dtype}{'(' + ', '.join(map(str, t.params)) + ')' if t.params else ''}"
                                             f"[{t.numel}]`")
            return None
        if t.dtype == "int" and t.params[1] <= t.params[0]:
            self.error("E305", d.type.span, why=f"int({t.params[0]}, {t.params[1]}) has no room to move",
                       hint="write int(lo, hi) with lo < hi")
            return None
        node.role = "space"
        return node

    def _actions(self, items, state):
        out, seen, exits, ok = [], {}, [], True
        for d in (it for it in items if isinstance(it, ast.ActionDecl)):
            if d.name_span in self.duplicates:
                continue
            try:
                rng = self._range(d.range, self.scope) if d.range else None
            except Bad:
                ok = False
                continue
            for i in (range(rng[0], rng[1] + 1) if rng else [None]):
                rec, family_ok = self._action(d, i, rng, state, seen)
                if rec is None:
                    ok = False
                    if not family_ok:
                        break
                    continue
                (exits if rec["entry"] == "exit" else out).append(rec)
        if exits[1:]:
            self.error("E207", exits[1]["span"], name="exit")
            ok = False
        if not exits and ok:
            self.error("E206", self.model.name_span, what="exit action", example="`action stop = exit()`")
            ok = False
        if not out and ok:
            self.error("E206", self.model.name_span, what="action that moves",
                       example="`action inc[i in 0..D - 1] = increment(coord = i)`")
            ok = False
        if len(out) > MAX_MOVES:
            self.error("E407", self.model.name_span, what="the number of actions", value=f"{len(out):,}",
                       limit=f"{MAX_MOVES:,}", hint="")
            ok = False
        return (out, exits[0]) if ok and exits else None

    def _action(self, d: ast.ActionDecl, i, rng, state, seen) -> tuple[dict | None, bool]:
        """One action of a declaration (element i of a family), or None after an error,
        and whether the family's other elements are still worth checking (yes after a
        value out of range, no after a wrong call, which every element repeats)."""
        scope = self.scope.with_vars(**{d.range.var: i}) if d.range else self.scope
        aid = d.name if i is None else f"{d.name}[{i}]"
        try:
            entry, args = self._call_args(d.call, "action", scope, refs=False)
        except Bad:
            return None, False
        if state is not None and state.type.dtype not in entry.info["types"]:
            self.error("E410", d.call.name_span, what=f"action {entry.name}()", need=entry.info["need"],
                       state=state.id, type=str(state.type), hint=_action_hint(state.type.dtype))
            return None, False
        if state is not None and entry.info["bound"] is not None:
            bad = entry.info["bound"](args, state.type)
            if bad is not None:
                arg, value, allowed = bad
                what = "vocabulary" if arg == "token" else "coordinates" if arg == "coord" else "items"
                span = next((a.value.span for a in d.call.args if a.name == arg), d.call.span)
                self.error("E411", span, arg=arg, value=value, what=what, state=state.id, range=allowed,
                           hint=f"in action {aid}" if rng else "")
                return None, True
        key = (entry.name, tuple(sorted(args.model_dump().items())))
        if key in seen and entry.name != "exit":
            self.error("E509", d.span, name=aid, other=seen[key])
            return None, True
        seen[key] = aid
        return dict(id=aid, entry=entry.name, args=args.model_dump(), span=d.span), True

    def _policies(self, items, state, actions):
        pol: dict = {}
        ok = True
        for d in (it for it in items if isinstance(it, ast.PolicyDecl)):
            if d.direction in pol:
                self.error("E207", d.span, name=f"policy {d.direction}")
                ok = False
                continue
            try:
                entry, args = self._call_args(d.call, "policy", self.scope)
            except Bad:
                ok = False
                continue
            a = args.model_dump()
            pol[d.direction] = dict(entry=entry.name, args=a, learned=bool(entry.learned(args)), span=d.span,
                                    call=d.call)
            if "net" in a and state is not None and actions is not None:
                n_out = len(actions[0]) + (1 if d.direction == "forward" else 0)
                why = "over the forward actions and exit" if d.direction == "forward" else "over the backward actions"
                ok &= self._space_net(str(a["net"]), d.call, "softmax", why, state, n_out)
        for direction in ("forward", "backward"):
            if direction not in pol and ok:
                self.error("E206", self.model.name_span, what=f"{direction} policy",
                           example=f"`policy {direction} = {'softmax(net = pf)' if direction == 'forward' else 'uniform()'}`")
                ok = False
        return pol if ok else None

    def _space_net(self, net: str, call, kernel: str, why: str, state, n_out: int) -> bool:
        """A net reading the space's state, encoded one-hot, with n_out outputs."""
        info = self.out.nets.get(net)
        if info is None:
            return False
        f = info["facts"]
        need_in = encoding_size(state.type)
        span = next((a.value.span for a in call.args if a.name in ("net", "flow")), call.span)
        good = True
        if f.in_size != need_in:
            self.error("E402", span, net=net, which="takes", got=f.in_size, kernel=kernel,
                       why=f"reading {state.id} ({state.type}, encoded one-hot)", need=need_in,
                       hint=f.take_hint(net, need_in))
            good = False
        if f.out_size != n_out:
            self.error("E402", span, net=net, which="outputs", got=f.out_size, kernel=kernel, why=why, need=n_out,
                       hint=f"make net '{net}' output {n_out} values")
            good = False
        return good

    def _space_facts(self, state, actions) -> None:
        moves, ex = actions
        t = state.type
        n = space_size(t)
        # n_states is exact below 2^62 (JSON and int64 hold it) and None above; `states` says it in words
        self.out.space = dict(state=state.id, dtype=t.dtype, params=list(t.params), size=t.numel,
                              n_states=n if n < 2 ** 62 else None, states=count_text(n), encoding=encoding_size(t),
                              n_moves=len(moves), max_moves=max_moves(t), exit=ex["args"]["when"],
                              enumerable=n <= EXACT_LIMIT)
        self.out.actions = moves + [ex]

    def _desugar(self, state, actions, pol) -> None:
        """The space as the same record as any model: a move step and an exit step."""
        moves, ex = actions
        s = state.id
        kids = {}
        for direction, p in pol.items():
            kid = f"step1.{direction}"
            self.out.kernels[kid] = KernelInfo(kid, p["entry"], p["args"], p["learned"], (), direction, p["call"].span)
            kids[direction] = kid
        names = ", ".join(dict.fromkeys(a["id"].split("[")[0] for a in moves))
        self.out.transitions["step1"] = TransitionInfo(
            "step1", f"{s} -> {s} by {names}; exit by {ex['id']}", s, s, None, None, None, state.span,
            {d: self._text(p["call"].span) for d, p in pol.items()})
        self.out.nodes["x"] = NodeInfo("x", "x", None, state.type, "terminal", state.span)
        self.out.edges.append(EdgeInfo(s, s, "move", "step1", {}, kids["forward"], kids["backward"], state.span))
        self.out.edges.append(EdgeInfo(s, "x", "exit", "step1", {}, kids["forward"], None, ex["span"]))
        self.out.source_node, self.out.data_node = s, "x"


def _action_hint(dtype: str) -> str:
    return {"int": "int states move by increment(coord = i)", "set": "set states move by add(item = i)",
            "seq": "seq states move by append(token = v) or prepend(token = v)"}[dtype]
