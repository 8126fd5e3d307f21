"""Registry entries: a name, a kind, a pydantic argument model, capabilities and rules.

A spec is closed: a call `gaussian(net = dec)` is only legal because `gaussian` is an
entry here, and its arguments only because `Gaussian.Args` accepts them. Nothing in a
spec can name Python code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

KINDS = ("kernel", "prior", "net", "schedule", "dataset", "objective", "action", "reward", "energy", "policy",
         "condition")


@dataclass(frozen=True)
class Ref:
    """A reference from an argument to another declaration (a net or a schedule)."""

    kind: str  # "net" | "schedule"
    name: str  # "eps", or "st[3]" for an element of an indexed net family

    def __str__(self) -> str:
        return self.name


def _ref_validator(kind: str):
    def check(v: Any) -> Ref:
        if isinstance(v, Ref) and v.kind == kind:
            return v
        if isinstance(v, Ref):
            raise ValueError(f"expected a {kind}, but '{v.name}' is a {v.kind}")
        raise ValueError(f"expected the name of a {kind}, got {_show(v)}")

    return check


def _show(v: Any) -> str:
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


NetRef = Annotated[Ref, PlainValidator(_ref_validator("net")), PlainSerializer(str)]
CondRef = Annotated[Ref, PlainValidator(_ref_validator("condition")), PlainSerializer(str)]
ScheduleRef = Annotated[Ref, PlainValidator(_ref_validator("schedule")), PlainSerializer(str)]
PosInt = Annotated[int, Field(gt=0, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0)]


class Args(BaseModel):
    """Base of every argument model: unknown arguments are errors, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass
class Entry:
    """One registered name.

    kind         kernel | prior | net | schedule | dataset | objective
    args         the pydantic model of its arguments
    doc          one line for `gfdsl explain` and docs/language.md
    directions   kernels: {"forward"}, {"backward"} or both
    caps         capabilities: bijective, rsample, closed_form_marginal, deterministic
    learned      kernels and priors: does it hold parameters (given its args)?
    rule         kernels: shape/capability rule, called with a KernelUse, returns problems
    info         free-form facts used by the checker (net sizes, data-set types, ...)
    build        the torch half: a callable or "module:attribute", called at lowering as
                 build(args, ctx) with the IR's argument dict and a gfdsl.plugins.Context;
                 None for kinds the lowering builds itself (kernels, priors, objectives)
    source       who registered it: "gfdsl", or the plugin's name (gfdsl.plugins)
    """

    name: str
    kind: str
    args: type[Args]
    doc: str
    directions: frozenset[str] = frozenset({"forward", "backward"})
    caps: frozenset[str] = frozenset()
    learned: Callable[[Args], bool] = lambda a: False
    rule: Callable[..., list] | None = None
    info: dict = field(default_factory=dict)
    build: Any = None
    source: str = "gfdsl"


class Registry:
    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}

    def add(self, entry: Entry) -> Entry:
        assert entry.name not in self._entries[entry.kind], entry.name
        self._entries[entry.kind][entry.name] = entry
        return entry

    def remove(self, entry: Entry) -> None:
        """Undo add (a plugin whose registration failed half-way leaves nothing behind)."""
        if self._entries[entry.kind].get(entry.name) is entry:
            del self._entries[entry.kind][entry.name]

    def get(self, kind: str, name: str) -> Entry | None:
        return self._entries[kind].get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def kind_of(self, name: str) -> str | None:
        for k in KINDS:
            if name in self._entries[k]:
                return k
        return None

    def all(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def sources(self) -> list[str]:
        """The plugins that added entries, sorted (gfdsl's own entries not counted)."""
        return sorted({e.source for k in KINDS for e in self._entries[k].values()} - {"gfdsl"})


REGISTRY = Registry()


# -- what rules see -----------------------------------------------------------------------

VALUE_TYPES = {"real": 0, "binary": 0, "cat": 1,  # type name -> number of parameters
               # discrete spaces of the action notation (gfdsl.library.actions)
               "int": 2, "set": 0, "seq": 1}
DISCRETE_TYPES = ("int", "set", "seq")


@dataclass(frozen=True)
class StateType:
    """The value type of one concrete state: `real[2]`, `binary[64]`, `cat(17)[1, 8, 8]`."""

    dtype: str
    params: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def net_width(self) -> int:
        """How many values the state gives a net's input: a categorical state goes in
        one-hot (numel * K), every other type as its values (numel)."""
        return self.numel * self.params[0] if self.dtype == "cat" else self.numel

    @property
    def discrete_space(self) -> bool:
        return self.dtype in DISCRETE_TYPES

    @property
    def classes(self) -> int:
        """Number of values one element takes (2 for binary, K for cat(K)); 0 for real."""
        return 2 if self.dtype == "binary" else self.params[0] if self.dtype == "cat" else 0

    def __str__(self) -> str:
        p = f"({', '.join(map(str, self.params))})" if self.params else ""
        return f"{self.dtype}{p}[{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class NetFacts:
    entry: str
    in_size: int
    out_size: int
    time_embed: int

    def take_hint(self, net: str, n: int) -> str:
        """E402's hint where net `net` must read n values: its `in` where it has one, else
        the size its shape arguments must make."""
        has_in = "in_" in REGISTRY.get("net", self.entry).args.model_fields
        return f"set `in = {n}` on net '{net}'" if has_in else f"make net '{net}' take {n} values"


@dataclass
class KernelUse:
    """One use of a kernel on one step, in the kernel's own direction.

    A backward kernel on the step `a -> b` conditions on b and produces a, so `inp` is
    the state the kernel reads and `out` the state whose distribution it returns.
    """

    direction: str
    inp: StateType
    out: StateType
    inp_name: str
    out_name: str
    context_numel: int
    nets: dict[str, NetFacts]
    schedules: dict[str, int]
    n_steps: int
    data: StateType | None
    source_point: tuple[float, ...] | None = None  # the source's value, when it is a point mass (): unknown
    rewarded: bool = False  # the model has a reward or energy target (e.g. for grad log R)


@dataclass(frozen=True)
class Problem:
    """A rule's finding: a catalogue code, the argument to point at (or None), fields."""

    code: str
    arg: str | None
    fields: dict = field(default_factory=dict, hash=False, compare=False)
