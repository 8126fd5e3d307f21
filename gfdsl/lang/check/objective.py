"""Objectives and what they need: terms flattened into weighted sums, staged for a
posterior, each term fitting the model's target (data, reward, or both), train
settings, and the capability rules every model shares (a learned policy must be
trained, tbc needs a learned P_B, mle one trajectory per data point, ...)."""

from __future__ import annotations

from gfdsl.lang import ast
from gfdsl.lang.evaluate import Bad, Scope
from gfdsl.library import REGISTRY
from gfdsl.errors import diag
from gfdsl.library.settings import NEEDS, TrainSettings

BALANCE_HINT = "a reward trains by tb, db, subtb or vargrad (fm with actions)"
POSTERIOR_HINT = ("write `objective = elbo(...) then rtb`: the prior learns the data set, then rtb tilts it by the "
                  "reward")


class Objectives:
    # -- terms and stages ----------------------------------------------------------------------

    def _objective(self, d: ast.ObjectiveDecl, data: bool, reward: bool) -> None:
        stages = []
        for e in (d.expr, d.then):
            if e is None:
                continue
            terms: list[dict] = []
            try:
                self._terms(e, 1.0, terms, refs=True)
            except Bad:
                return
            if not terms:
                self.error("E608", e.span, why="but it has no term")
                return
            stages.append(terms)
        if self._fits(d, stages, data, reward):
            self.out.objective = stages[-1]
            self.out.prior_objective = stages[0] if len(stages) == 2 else []

    def _fits(self, d: ast.ObjectiveDecl, stages: list, data: bool, reward: bool) -> bool:
        """Every term fits the target: data terms a data set, balance terms a reward, rtb
        both; a model with both is a posterior, staged `<data terms> then rtb`."""
        target = lambda t: REGISTRY.get("objective", t["term"]).info["target"]  # noqa: E731
        ok = True
        if len(stages) == 2 and not (data and reward):
            missing = "reward" if data else "data set" if reward else "data set or reward"
            self.error("E614", d.then.span, why=f"this model has no {missing}", hint=POSTERIOR_HINT)
            return False
        if data and reward:
            final, first = stages[-1], stages[0] if len(stages) == 2 else []
            for t in final:
                if target(t) != "posterior":
                    self.error("E614", t["span"], why=f"{t['term']}() is not a posterior term (rtb)",
                               hint=POSTERIOR_HINT)
                    ok = False
            for t in first:
                if target(t) != "data":
                    self.error("E614", t["span"], why=f"the prior stage's {t['term']}() does not train from data",
                               hint="the stage before `then` trains the prior from the data set: use elbo, mle or tbc")
                    ok = False
            return ok
        for t in stages[0]:
            tg = target(t)
            if tg == "posterior":
                self.error("E614", t["span"], why=f"this model has {'no reward' if data else 'no data set'}",
                           hint="rtb tilts a data-trained prior by a reward: declare a `dataset` and a `reward`")
                ok = False
            elif tg == "reward" and data:
                self.error("E611", t["span"], objective=t["term"],
                           hint="add a `reward = ...` or `energy = ...` to train by balance; from data alone, "
                                "train with elbo, mle or tbc")
                ok = False
            elif tg == "data" and not data:
                self.error("E613", t["span"], objective=t["term"],
                           hint=f"{BALANCE_HINT}; add a `dataset` to train from data")
                ok = False
        return ok

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

    # -- train settings ---------------------------------------------------------------------------

    def _train(self, block: ast.TrainBlock | None, has: dict) -> None:
        """The train block against TrainSettings; a setting the model has no use for (NEEDS)
        is E612. `has` says what the model is: {reward, actions, posterior, chain}."""
        values, spans = {}, {}
        for a in block.assigns if block else ():
            if a.name in spans:
                self.error("E306", a.name_span, name=a.name)
                continue
            need = NEEDS.get(a.name)
            why = _setting_unmet(need, has) if need else None
            if why:
                self.error("E612", a.name_span, what=f"the setting '{a.name}'", kind=why[0], why=why[1],
                           hint=why[2])
                spans[a.name] = None
                continue
            spans[a.name] = ast.Arg(a.name, a.value, a.span, a.name_span)
            try:
                values[a.name] = self.ev.value(a.value, self.scope)
            except Bad:
                pass
        values.update(self._train_overrides(has))
        try:
            self.out.train = self._validate(TrainSettings, values, spans, "train",
                                            block.span if block else self.model.name_span).model_dump()
        except Bad:
            return
        self.out.train_spans = {n: a.span for n, a in spans.items() if a is not None}
        self._local_search(spans.get("local_search"))
        self._validation(spans, has)

    def _validation(self, spans: dict, has: dict) -> None:
        """A validation split scores a likelihood: not a bridge's (its source is a data set,
        with no density) nor a posterior's; patience and val_every need a split (E612)."""
        tr = self.out.train
        if tr["val"] and (self.out.source_data is not None or has.get("posterior")):
            arg = spans.get("val")
            self.error("E612", arg.name_span if arg is not None else None, what="the setting 'val'",
                       kind="models with a likelihood to validate",
                       why="is a bridge between data sets (no source density)" if self.out.source_data is not None
                       else "is a posterior (its likelihood is not the data's)", hint="drop `val`")
            return
        name = next((n for n in ("patience", "val_every", "val_n", "val_k", "val_delta") if n in spans or n in self.overrides), None)
        if tr["val"] or name is None:
            return
        arg = spans.get(name)
        self.error("E612", arg.name_span if arg is not None else None, what=f"the setting '{name}'",
                   kind="runs with a validation split", why="holds none out (val = 0)",
                   hint="give `val = 0.1` as well (or `--val 0.1`)")

    def _train_overrides(self, has: dict) -> dict:
        """`--set NAME=VALUE` for train settings (names that are not dims): each checked
        alone against TrainSettings and NEEDS, its error naming the override (E706)."""
        from pydantic import ValidationError

        out = {}
        for name, v in self.overrides.items():
            if name in self.out.dims or name not in TrainSettings.model_fields:
                continue
            need = NEEDS.get(name)
            why = _setting_unmet(need, has) if need else None
            if why is None:
                try:
                    TrainSettings.model_validate({name: v})
                    out[name] = v
                    continue
                except ValidationError as e:
                    why = (None, e.errors()[0]["msg"].lower())
            else:
                why = (None, f"the setting belongs to {why[0]}, but this model {why[1]}")
            self.diags.append(diag("E706", None, None, path=self.src.path, text=f"{name}={v}", why=why[1]))
        return out

    def _local_search(self, arg: ast.Arg | None) -> None:
        """local_search moves buffered terminal states by MALA: it needs a replay buffer
        and real-valued terminal states (E612)."""
        tr = self.out.train
        if arg is None or not tr["local_search"]:
            return
        nid = self.out.data_node
        t = self.out.nodes[nid].type if nid is not None and nid in self.out.nodes else None
        if t is not None and t.dtype != "real":
            self.error("E612", arg.name_span, what="the setting 'local_search'", kind="chains of real states",
                       why=f"ends in {nid} : {t}", hint="MALA moves real vectors along grad log R(x)")
        elif not tr["replay"]:
            self.error("E612", arg.name_span, what="the setting 'local_search'", kind="models with a replay buffer",
                       why="has none (replay = 0)", hint="give `replay = 100000` (buffered terminal states) as well")


def _setting_unmet(need: str, has: dict) -> tuple[str, str, str] | None:
    """(kind, why, hint) when a setting needing `need` does not fit the model, else None."""
    if need == "reward" and not has["reward"]:
        return ("models trained from a reward", "trains from data",
                "log Z, replay and evaluation settings need a `reward` or `energy`")
    if need == "actions" and not has["actions"]:
        return ("models with actions", "has none", "a chain explores with `exploration`; epsilon and temperature "
                                                   "explore an action space")
    if need == "reward chain" and (has["actions"] or not has["reward"]):
        return (("chains trained from a reward", "grows its state by actions",
                 "an action space explores with `epsilon` or `temperature`") if has["actions"] else
                ("chains trained from a reward", "trains from data", "exploration draws off-policy trajectories "
                                                                     "for balance training"))
    if need == "data" and not has.get("data"):
        return ("models trained from data", "has no data set", "validation scores held-out data; a model "
                                                             "trained from a reward alone has none")
    if need == "condition" and not has.get("conditions"):
        return ("conditional models", "declares no condition", "declare one, e.g. `condition y : int(0, 9)`")
    if need == "posterior" and not has["posterior"]:
        return ("posteriors (`... then rtb`)", "has no prior stage", POSTERIOR_HINT)
    return None


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
