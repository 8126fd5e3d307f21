"""What the checker produces: a CheckedSpec of plain data, from which gfdsl.ir builds
the graph. Every model -- a chain of explicit steps, a tree of prefixes, a space grown
by actions -- is the same record: states, steps with a forward and a backward kernel,
a source, a terminal state, a target (a data set, a reward, or both) and an objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gfdsl.lang.source import NO_SPAN, Source, Span
from gfdsl.library.registry import StateType

MAX_STATES = 100_000  # unrolled states in one model
MAX_NUMEL = 1 << 24  # values in one state


@dataclass
class NodeInfo:
    id: str  # "x[3]" or "z1"
    family: str
    index: int | None
    type: StateType
    role: str = "latent"  # source | data | terminal | latent | space
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
    kind: str  # step | context | move (an action-valued step over a space) | exit
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
    objective: list[dict] = field(default_factory=list)  # [{coef, term, args, span}]: the model's own stage
    prior_objective: list[dict] = field(default_factory=list)  # a posterior's first stage (trains the prior)
    dataset: dict | None = None  # the data target {entry, args, span}
    reward: dict | None = None  # the reward target {entry, args, form, span}
    source_data: dict | None = None  # a data set the source is drawn from {entry, args, span}
    train: dict = field(default_factory=dict)
    train_spans: dict = field(default_factory=dict)  # setting -> Span of its `name = value` in the train block
    source_node: str | None = None
    data_node: str | None = None  # the terminal state: where forward trajectories end
    actions: list = field(default_factory=list)  # [{id, entry, args, span}], moves then exit
    space: dict | None = None  # facts of a discrete action space (sizes, encoding, moves)
    # name -> {kind (int | real), lo, hi (int), dim (real), prior {entry, args} | None,
    # source (labels | prior | uniform), readers [net ids], span}
    conditions: dict = field(default_factory=dict)


def node_id(family: str, index: int | None) -> str:
    return family if index is None else f"{family}[{index}]"
