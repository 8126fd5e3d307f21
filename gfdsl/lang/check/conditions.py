"""Conditions: inputs every draw of the model is given (`condition y : int(0, 9)`,
`condition beta : real ~ uniform(lo = 0.5, hi = 2.0)`), read by the nets that name them and, for a
temperature, by the reward (`reward = hypergrid(...) ** beta`).

Each condition needs a source -- a data set's labels for a data-trained model, the
distribution after `~` (or, for an int one, uniform over its values) for a reward-driven
one -- and a net that reads it; what reads it must fit its type."""

from __future__ import annotations

from gfdsl.errors import article, did_you_mean
from gfdsl.lang import ast
from gfdsl.lang.evaluate import Bad
from gfdsl.library import REGISTRY

MAX_INT_VALUES = 100_000  # values of an int condition (each has an embedding row)
MAX_REAL_DIM = 64


def condition_type(c: dict) -> str:
    return f"int({c['lo']}, {c['hi']})" if c["kind"] == "int" else f"real[{c['dim']}]"


class Conditions:
    def _condition(self, d: ast.ConditionDecl) -> None:
        try:
            c = self._condition_type(d.type)
            if d.prior is not None:
                if c["kind"] == "int":
                    self.error("E305", d.prior.span, why="an int condition takes no distribution",
                               hint="it comes from the data set's labels, or is drawn uniformly over its values")
                    raise Bad()
                entry, args = self._call_args(d.prior, "condition", self.scope, refs=False)
                c["prior"] = dict(entry=entry.name, args=args.model_dump(), support=entry.info["support"](args))
        except Bad:
            self.scope.poisoned.add(d.name)
            return
        self.out.conditions[d.name] = dict(c, span=d.span, name_span=d.name_span, readers=[])

    def _condition_type(self, t: ast.TypeExpr) -> dict:
        if t.name == "int" and len(t.params) == 2 and not t.shape:
            lo, hi = (self.ev.integer(p, self.scope, "a bound") for p in t.params)
            if lo > hi:
                self.error("E408", t.span, range=f"{lo}..{hi}")
                raise Bad()
            if hi - lo + 1 > MAX_INT_VALUES:
                self.error("E407", t.span, what="the number of values", value=f"{hi - lo + 1:,}",
                           limit=f"{MAX_INT_VALUES:,}", hint="an int condition is a label: a class, a mode, a task")
                raise Bad()
            return dict(kind="int", lo=lo, hi=hi, dim=1, prior=None)
        if t.name == "real" and not t.params and len(t.shape) <= 1:
            dim = self.ev.integer(t.shape[0], self.scope, "a size") if t.shape else 1
            if not 1 <= dim <= MAX_REAL_DIM:
                self.error("E401", t.shape[0].span, what="a condition's size", value=dim,
                           hint=f"a real condition has 1 to {MAX_REAL_DIM} values")
                raise Bad()
            return dict(kind="real", lo=None, hi=None, dim=dim, prior=None)
        self.error("E305", t.span, why=f"a condition is `int(lo, hi)` or `real` / `real[k]`, not `{self._text(t.span)}`",
                   hint="write `condition y : int(0, 9)` or `condition beta : real ~ uniform(lo = 0.5, hi = 2.0)`")
        raise Bad()

    # -- rules over the whole model ---------------------------------------------------------------

    def _condition_rules(self, items, singles: dict, data: bool, reward: bool) -> None:
        conds = self.out.conditions
        r = singles.get("reward")
        if r is not None:
            self._temper(r)
        if not conds:
            return
        if data and reward:
            first = next(iter(conds.values()))
            self.error("E612", first["span"], what="a condition", kind="models trained from data or from a reward",
                       why="is a posterior (both)", hint="condition the prior and the posterior in separate specs")
            return
        for name, c in conds.items():
            if not c["readers"]:
                self.error("E208", c["name_span"], name=name)
            if data:
                self._from_labels(name, c, singles.get("dataset"))
            elif c["kind"] == "real" and c["prior"] is None:
                self.error("E616", c["span"], name=name, why="a reward-driven model draws it during training",
                           hint=f"give its distribution: `condition {name} : real ~ uniform(lo = 0.5, hi = 2.0)`")
            else:
                c["source"] = "prior" if c["kind"] == "real" else "uniform"
        tr, first = self.out.train, next(iter(conds.values()))
        for setting in ("replay", "local_search"):
            if tr.get(setting):
                self.error("E612", first["span"], what=f"the setting '{setting}'", kind="unconditional models",
                           why="is conditional (its buffer would need each state's condition)",
                           hint=f"set `{setting} = 0`, or drop the condition")
        if tr.get("cond_dropout") and not any(c["kind"] == "int" for c in conds.values()):
            self.error("E612", first["span"], what="the setting 'cond_dropout'",
                       kind="models with an int condition", why="has only real ones",
                       hint="guidance drops a label; a real condition has no null value")

    def _from_labels(self, name: str, c: dict, d) -> None:
        """A data-trained model's condition is the data set's label of each example."""
        if c["prior"] is not None:
            self.error("E616", c["span"], name=name, why="a data-trained model reads it from its data set's labels, "
                       "not a distribution", hint=f"remove `~ {c['prior']['entry']}(...)`")
            return
        if c["kind"] != "int":
            self.error("E412", c["name_span"], name=name, type=condition_type(c), use="a data set's labels",
                       need="an int condition", hint=f"declare `condition {name} : int(0, 9)`")
            return
        if d is None or self.out.dataset is None:
            return
        entry = REGISTRY.get("dataset", self.out.dataset["entry"])
        rng = entry.info.get("labels", lambda a: None)(entry.args.model_validate(self.out.dataset["args"]))
        others = [n for n, o in self.out.conditions.items() if o.get("source") == "labels"]
        if rng is None:
            ex = {"digits": "digits(labels = true)", "file": 'file(path = "x.npy", labels = "y.npy")'}
            self.error("E616", c["span"], name=name, why=f"the data set {entry.name}() gives no labels",
                       hint=f"write `dataset = {ex[entry.name]}`" if entry.name in ex else
                       "use a data set with labels (digits, file)")
        elif others:
            self.error("E616", c["span"], name=name, why=f"the data set's labels are condition '{others[0]}' already",
                       hint="a data set gives one label per example")
        elif rng != "file" and (c["lo"], c["hi"]) != tuple(rng):
            self.error("E412", c["name_span"], name=name, type=condition_type(c),
                       use=f"the labels of {entry.name}()", need=f"int({rng[0]}, {rng[1]})",
                       hint=f"declare `condition {name} : int({rng[0]}, {rng[1]})`")
        else:
            c["source"] = "labels"

    def _temper(self, r: ast.RewardDecl) -> None:
        """`reward = R ** beta` / `energy = beta * E`: beta a real scalar condition."""
        if r.call is None:
            form = "reward = f(...) ** beta" if r.form == "reward" else "energy = beta * f(...)"
            self.error("E305", r.expr.span, why=f"the {r.form} is a registry call, optionally tempered by a condition",
                       hint=f"write `{r.form} = f(...)` or `{form}`")
            return
        if r.temper is None or self.out.reward is None:
            return
        name, span = r.temper.name, r.temper.span
        c = self.out.conditions.get(name)
        if c is None:
            if name in self.scope.poisoned:
                return
            kind = ("dim" if name in self.scope.dims else "net" if name in self.scope.nets else
                    "state" if name in self.scope.states else None)
            if kind:
                self.error("E204", span, name=name, actual=article(kind), expected="a condition",
                           hint="a reward is tempered by a condition: `condition beta : real ~ uniform(lo = 0.5, hi = 2.0)`")
            else:
                self.error("E201", span, name=name, hint=did_you_mean(name, self.out.conditions) or
                           "declare it: `condition beta : real ~ uniform(lo = 0.5, hi = 2.0)`")
            return
        if c["kind"] != "real" or c["dim"] != 1:
            self.error("E412", span, name=name, type=condition_type(c), use=f"tempering the {r.form}",
                       need="a real scalar", hint=f"declare `condition {name} : real ~ uniform(lo = 0.5, hi = 2.0)`")
            return
        self.out.reward["temper"] = name
