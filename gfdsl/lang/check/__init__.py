"""The checker: AST -> CheckedSpec, or every error at once, sorted by position.

One checker for every model. It resolves names (with did-you-mean), evaluates dims
(with command-line overrides), unrolls indexed state families and steps -- or desugars
the action notation into one step over a discrete space (gfdsl.lang.check.actions) --,
validates every registry call's arguments against its pydantic model, matches shapes
(state types, net sizes, schedule lengths, the data set, the reward), fits every
objective term to the model's target (data set, reward, or both: a posterior) and
checks capabilities (inverse needs a bijection, tbc a learned P_B, mle one trajectory
per data point, every learned policy is trained). It imports neither torch nor
networkx; gfdsl.ir builds the graph from its result.
"""

from __future__ import annotations

from gfdsl.errors import GfdslError
from gfdsl.lang import ast
from gfdsl.lang.check.actions import Actions
from gfdsl.lang.check.base import Base, dedupe
from gfdsl.lang.check.conditions import Conditions
from gfdsl.lang.check.declare import Declarations
from gfdsl.lang.check.objective import Objectives
from gfdsl.lang.check.rules import Rules
from gfdsl.lang.check.spec import (  # noqa: F401  (the checker's output types)
    MAX_NUMEL, MAX_STATES, CheckedSpec, EdgeInfo, KernelInfo, NodeInfo, TransitionInfo, node_id,
)
from gfdsl.lang.check.steps import Steps
from gfdsl.lang.check.targets import Targets
from gfdsl.lang.source import Source

SINGLETONS = {ast.SourceDecl: "source", ast.DataStateDecl: "data", ast.DatasetDecl: "dataset",
              ast.ObjectiveDecl: "objective", ast.TrainBlock: "train", ast.RewardDecl: "reward"}


class Checker(Declarations, Conditions, Steps, Actions, Targets, Objectives, Rules, Base):
    def run(self) -> CheckedSpec:
        items = self.model.items
        self._declarations(items)
        for it in items:
            if isinstance(it, ast.DimsBlock):
                self._dims(it)
        self._unknown_overrides()
        for kind, check in ((ast.ScheduleDecl, self._schedule), (ast.StateDecl, self._state),
                            (ast.ConditionDecl, self._condition), (ast.NetDecl, self._net)):
            for it in items:
                if isinstance(it, kind) and it.name_span not in self.duplicates:
                    check(it)
        singles = self._singletons(items)
        actions = any(isinstance(i, ast.ActionDecl) for i in items)
        data, reward = "dataset" in singles and not actions, "reward" in singles  # (a dataset with actions: E612)
        self._rewarded = reward
        if actions:
            self._action_model(items)
        else:
            self._chain(items, singles)
        if data:
            self._dataset(singles["dataset"])
        if reward:
            self._reward(singles["reward"])
        self._target(singles, data, reward, actions)
        self._train(singles.get("train"), dict(reward=reward, actions=actions, posterior=data and reward,
                                               conditions=bool(self.out.conditions), data=data))
        self._condition_rules(items, singles, data, reward)
        if not self.diags:
            self._capabilities()
        if self.diags:
            raise GfdslError(dedupe(self.diags))
        return self.out

    def _singletons(self, items) -> dict:
        found: dict = {}
        for it in items:
            k = SINGLETONS.get(type(it))
            if k is None:
                continue
            if k in found and k == "reward":
                first = found[k]
                self.error("E205", it.span, message=f"the model already has a target {first.form} (line "
                           f"{first.span.line}); a model has one reward or energy", hint="keep one of them")
            elif k in found:
                self.error("E207", it.span, name=k)
            else:
                found[k] = it
        return found

    def _chain(self, items, singles) -> None:
        """A model of explicit steps: source, steps, the terminal (data) state."""
        for it in items:
            if isinstance(it, ast.PolicyDecl):
                self.error("E612", it.span, what="a policy", kind="models with actions", why="has none",
                           hint="a step's policies are its `forward = ...` and `backward = ...` kernels")
        for n in self.out.nodes.values():
            if n.type.discrete_space:
                self.error("E612", n.span, what=f"the space type {n.type.dtype}", kind="models with actions",
                           why="has none", hint="states of steps are real, binary or cat; declare `action`s and "
                                                "`policy`s to grow an int, set or seq state")
                break
        if "source" in singles:
            self._source(singles["source"])
        else:
            self.error("E206", self.model.name_span, what="source state", example="`source x ~ normal()`")
        if "data" in singles:
            self._data_state(singles["data"])
        for n, it in enumerate((i for i in items if isinstance(i, ast.StepDecl)), start=1):
            self._step(it, f"step{n}")
        if not any(isinstance(i, ast.StepDecl) for i in items):
            self.error("E206", self.model.name_span, what="step", example="`step a -> b { forward = ... backward = ... }`")
        self._terminal(singles)

    def _target(self, singles, data: bool, reward: bool, actions: bool) -> None:
        """The model learns from a data set, a reward, or both; its objective must fit."""
        if not data and not reward:
            self.error("E206", self.model.name_span, what="target", example=(
                "`reward = ...` (a model with actions learns from its reward)" if actions else
                '`dataset = toy2d(name = "moons")`, or a `reward = ...` / `energy = ...`'))
        if "objective" in singles:
            self._objective(singles["objective"], data, reward)
        else:
            self.error("E206", self.model.name_span, what="objective", example="`objective = tb`" if reward and not data
                       else "`objective = elbo`")


def check(source: Source, model: ast.Model, overrides: dict | None = None, inputs=None) -> CheckedSpec:
    """Check a parsed model; raise GfdslError with every problem found, sorted. `inputs`
    (gfdsl.files.Inputs) finds the data files it names (default: beside the spec)."""
    return Checker(source, model, overrides, inputs).run()
