"""The checker's rules for reward-driven models (a mixin of gfdsl.check.Checker).

A model is reward-driven when it declares an `action`, a `reward` or a `policy`. It then
has exactly one state, over a discrete space (int, set or seq), actions from the closed
set of gfdsl.library.discrete (so every action's inverse is known), exactly one exit,
a reward, a forward and a backward policy and reward objectives (tb, db, subtb, fm,
vargrad); it has no source, data, step or dataset. Every move raises a level function
(sum of coordinates, set size, sequence length), so the state graph the actions span is
a DAG by construction: no cycle check over the (possibly huge) state space is needed.
"""

from __future__ import annotations

from gfdsl.lang import ast
from gfdsl.lang.evaluate import Bad
from gfdsl.library import REGISTRY
from gfdsl.library.discrete import REWARD_OBJECTIVES, encoding_size, max_moves, space_size

MAX_MOVES = 100_000  # actions in one model: the policy nets output one logit each
EXACT_LIMIT = 1 << 22  # states enumerated by exact evaluation


class RewardChecks:
    """Mixed into Checker: uses its error(), _call_args(), scope and out."""

    def _reward_model(self, items, singles) -> None:
        self.out.kind = "reward"
        for it in items:
            what = {ast.SourceDecl: "a source", ast.DataStateDecl: "a data state", ast.StepDecl: "a step",
                    ast.DatasetDecl: "a dataset", ast.ScheduleDecl: "a schedule"}.get(type(it))
            if what:
                self.error("E612", it.span, what=what, kind="data-trained",
                           why="is reward-driven (it declares actions, a reward or policies)",
                           hint="remove it: a reward-driven model starts at its space's empty state and ends by exit")
        state = self._reward_state(items)
        actions = self._actions(items, state)
        if "reward" not in singles:
            self.error("E206", self.model.name_span, what="reward", example="`reward = hypergrid()`")
        else:
            self._reward(singles["reward"], state)
        pol = self._policies(items, state, actions)
        if "objective" not in singles:
            self.error("E206", self.model.name_span, what="objective", example="`objective = tb`")
        else:
            self._objective(singles["objective"], refs=True)
            for t in self.out.objective:
                if t["term"] not in REWARD_OBJECTIVES:
                    self.error("E612", t["span"], what=f"objective {t['term']}()", kind="data-trained",
                               why="is reward-driven", hint=f"use one of {', '.join(REWARD_OBJECTIVES)}")
        self._train(singles.get("train"), reward=True)
        if state is None or actions is None or pol is None or self.diags:
            return
        self._reward_facts(state, actions)
        self._reward_capabilities(pol)

    def _reward_state(self, items):
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
            self.error("E410", d.type.span, what="a reward-driven model", state=d.name, type=str(t),
                       need="a discrete space: int(lo, hi)[D], set[N] or seq(V)[L]",
                       hint="e.g. `state s : int(0, 7)[2]` for an 8x8 hypergrid")
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
                scope = self.scope.with_vars(**{d.range.var: i}) if d.range else self.scope
                aid = d.name if i is None else f"{d.name}[{i}]"
                try:
                    entry, args = self._call_args(d.call, "action", scope, refs=False)
                except Bad:
                    ok = False
                    break
                if state is not None and state.type.dtype not in entry.info["types"]:
                    self.error("E410", d.call.name_span, what=f"action {entry.name}()", need=entry.info["need"],
                               state=state.id, type=str(state.type), hint=_action_hint(state.type.dtype))
                    ok = False
                    break
                if state is not None and entry.info["bound"] is not None:
                    bad = entry.info["bound"](args, state.type)
                    if bad is not None:
                        arg, value, allowed = bad
                        what = "vocabulary" if arg == "token" else "coordinates" if arg == "coord" else "items"
                        span = next((a.value.span for a in d.call.args if a.name == arg), d.call.span)
                        self.error("E411", span, arg=arg, value=value, what=what, state=state.id, range=allowed,
                                   hint=f"in action {aid}" if rng else "")
                        ok = False
                        continue
                key = (entry.name, tuple(sorted(args.model_dump().items())))
                if key in seen and entry.name != "exit":
                    self.error("E509", d.span, name=aid, other=seen[key])
                    ok = False
                    continue
                seen[key] = aid
                rec = dict(id=aid, entry=entry.name, args=args.model_dump(), span=d.span)
                (exits if entry.name == "exit" else out).append(rec)
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

    def _reward(self, d: ast.RewardDecl, state) -> None:
        try:
            entry, args = self._call_args(d.call, "reward", self.scope, refs=False)
        except Bad:
            return
        if state is not None and state.type.dtype not in entry.info["types"]:
            self.error("E410", d.call.name_span, what=f"reward {entry.name}()", need=entry.info["need"],
                       state=state.id, type=str(state.type), hint="use `table(file = ...)` for any space")
            return
        self.out.reward = dict(entry=entry.name, args=args.model_dump(), span=d.span)

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
            pol[d.direction] = dict(entry=entry.name, args=a,
                                    learned=bool(entry.learned(args)), span=d.span)
            if "net" in a and state is not None and actions is not None:
                n_out = len(actions[0]) + (1 if d.direction == "forward" else 0)
                why = "over the forward actions and exit" if d.direction == "forward" else "over the backward actions"
                ok &= self._policy_net(str(a["net"]), d.call, "softmax", why, state, n_out)
        for direction in ("forward", "backward"):
            if direction not in pol and ok:
                self.error("E206", self.model.name_span, what=f"{direction} policy",
                           example=f"`policy {direction} = {'softmax(net = pf)' if direction == 'forward' else 'uniform()'}`")
                ok = False
        self.out.policies = pol
        return pol if ok else None

    def _policy_net(self, net: str, call, kernel: str, why: str, state, n_out: int) -> bool:
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
                       hint=f"set `in = {need_in}` on net '{net}'")
            good = False
        if f.out_size != n_out:
            self.error("E402", span, net=net, which="outputs", got=f.out_size, kernel=kernel, why=why, need=n_out,
                       hint=f"make net '{net}' output {n_out} values")
            good = False
        return good

    def _reward_facts(self, state, actions) -> None:
        moves, ex = actions
        t = state.type
        self.out.space = dict(state=state.id, dtype=t.dtype, params=list(t.params), size=t.numel,
                              n_states=space_size(t), encoding=encoding_size(t), n_moves=len(moves),
                              max_moves=max_moves(t), exit=ex["args"]["when"],
                              enumerable=space_size(t) <= EXACT_LIMIT)
        self.out.actions = moves + [ex]
        for term in self.out.objective:
            flow = term["args"].get("flow")
            if flow is not None:
                call = next((c for c in _calls(self.model) if c.name == term["term"]), None)
                if call is not None:
                    self._policy_net(str(flow), call, term["term"], "as the state flow log F(s)", state, 1)

    def _reward_capabilities(self, pol) -> None:
        trains: set[str] = set()
        for t in self.out.objective:
            trains |= REGISTRY.get("objective", t["term"]).info["trains"](None)  # reward terms ignore args
        if not pol["forward"]["learned"]:
            self.error("E606", pol["forward"]["span"])
            return
        span = self.out.objective[0]["span"] if self.out.objective else self.model.name_span
        if pol["backward"]["learned"] and "pb" not in trains:
            self.error("E609", span, policy="the backward policy P_B",
                       hint="fm() trains edge flows only: use `policy backward = uniform()`, or tb/db/subtb")


def _action_hint(dtype: str) -> str:
    return {"int": "int states move by increment(coord = i)", "set": "set states move by add(item = i)",
            "seq": "seq states move by append(token = v) or prepend(token = v)"}[dtype]


def _calls(model: ast.Model):
    for it in model.items:
        if isinstance(it, ast.ObjectiveDecl):
            stack = [it.expr]
            while stack:
                e = stack.pop()
                if isinstance(e, ast.Call):
                    yield e
                elif isinstance(e, ast.BinOp):
                    stack += [e.left, e.right]
                elif isinstance(e, ast.Neg):
                    stack.append(e.operand)


__all__ = ["RewardChecks"]
