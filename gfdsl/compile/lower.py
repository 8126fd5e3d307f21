"""Lowering: a validated SpecGraph -> GfnModel (an nn.Module), one lowering for every spec.

Nets are built once into a ModuleDict and shared by name; schedules become buffers; each
kernel id of the IR becomes one kernel module. The steps become the model's space: a
chain of PlanSteps from the source to the terminal state (steps sharing a kernel
grouped for batched scoring), or, for the action notation, a Space compiled from the
actions with the policies' nets. The target becomes a run-time reward; a posterior
gets a frozen copy of its forward kernels (the prior). Problems found only here (an
objective that does not fit the structure, a decoder that never reaches the data) are
diagnostics with the spec's line and column.
"""

from __future__ import annotations


import networkx as nx
import torch
from torch import nn

import gfdsl.runtime  # noqa: F401  (switches off distribution validation)
from gfdsl.engine.branching import Branching
from gfdsl.engine.chain import Chain, Plan, PlanStep
from gfdsl.engine.module import GfnModel
from gfdsl.engine.objectives import Objective
from gfdsl.files import Inputs
from gfdsl.ir.graph import numel
from gfdsl.errors import GfdslError, diag
from gfdsl.lang.source import Source, Span
from gfdsl.runtime import kernels as K
from gfdsl.runtime import samplers as S
from gfdsl.runtime import conditions as C
from gfdsl.runtime import flows as Fl
from gfdsl.runtime import ode as O
from gfdsl.plugins import construct
from gfdsl.runtime import targets
from gfdsl.runtime.schedules import Schedule
from gfdsl.runtime.spaces import Space

ATTRS = ("name", "dims", "objective", "prior_objective", "dataset", "reward", "source_data", "space", "train",
         "source", "data")


def _key(name: str) -> str:
    """ModuleDict keys may not contain '.': 'step1.forward[k=2]' -> 'step1:forward[k=2]'."""
    return name.replace(".", ":")


def lower(g: nx.DiGraph, source: Source | None = None, inputs: Inputs | None = None) -> GfnModel:
    """The IR as a GfnModel; the files the spec names (a reward table, a bridge's source
    data) are found through `inputs`, by default beside the spec."""
    G = g.graph
    conds = C.Conditions(G.get("conditions") or {}, G["train"])
    nets = nn.ModuleDict({_key(n): _net(v, conds) for n, v in G["nets"].items()})
    inputs = inputs or Inputs.beside(source.path if source is not None else None)
    if G["space"] is not None:
        space = _branching(G, g, nets)
        shape, dtype = (space.space.n,), G["space"]["dtype"]
    else:
        space = _chain(g, nets, inputs, source)
        data = g.nodes[G["data"]]
        shape, dtype = tuple(data["shape"]), data["dtype"]
    reward = None
    if G["reward"] is not None:
        r = G["reward"]
        reward = construct("energy" if r["form"] == "energy" else "reward", r["entry"], r["args"],
                           space=getattr(space, "space", None), inputs=inputs)
        if not isinstance(reward, targets.Target):  # a plugin's plain module
            reward = targets.Adapted(reward, real=G["space"] is None)
        if G["reward"].get("temper"):
            reward = C.Tempered(reward, conds, G["reward"]["temper"])
    model = GfnModel({k: G[k] for k in ATTRS}, nets, space, reward, shape, dtype, conds)
    if reward is not None and G["train"]["replay"]:
        template = space.space.s0(1, "cpu") if G["space"] is not None else torch.zeros(1, *shape)
        model.with_replay(template)
    for k in getattr(space, "kernels", {}).values():
        if isinstance(k, S.ControlledSDE) and k.langevin:
            k.grad_log_r = reward.grad_log_r
    if any(t["term"] == "rtb" for t in G["objective"]):
        model.prior_nets, model.prior_chain = _prior(g, space)
    stages = [G["prior_objective"], G["objective"]] if G["prior_objective"] else [G["objective"]]
    model.objective = Objective(model, stages, int(G["train"]["prior_steps"]), source)
    return model


def _net(v: dict, conds: "C.Conditions") -> nn.Module:
    """A net of the IR; one reading conditions is built wider by their features and
    wrapped (gfdsl.runtime.conditions.Conditioned)."""
    a = v["args"]
    names = list(a.get("cond") or ())
    if not names:
        return construct("net", v["entry"], a)
    width = int(a["cond_embed"])
    inner = construct("net", v["entry"], {**a, "in": a["in"] + width * len(names)})
    return C.Conditioned(inner, conds, names, width)


# -- chains of explicit steps --------------------------------------------------------------------


def chain(g: nx.DiGraph) -> list[str]:
    """States from source to the terminal state along step edges: walked back from the
    terminal state through each state's one parent (validate() guarantees one), in
    linear time."""
    parent = {b: a for a, b, d in g.edges(data=True) if d["kind"] == "step"}
    order = [g.graph["data"]]
    while order[-1] != g.graph["source"]:
        order.append(parent[order[-1]])
    return order[::-1]




def _chain(g: nx.DiGraph, nets: nn.ModuleDict, inputs: Inputs, source) -> Chain:
    G = g.graph
    nodes = g.nodes
    schedules = nn.ModuleDict({n: Schedule(s["entry"], s["args"]) for n, s in G["schedules"].items()})
    order = chain(g)
    n_data = numel(nodes[G["data"]])
    kernels = nn.ModuleDict()
    uses = _first_uses(g)
    for kid, k in G["kernels"].items():
        if k["role"] == "prior" or k["entry"] == "inverse":
            continue
        kernels[_key(kid)] = _kernel_of(g, uses[kid], k, nets, schedules, n_data)
    plan = _plan(g, order)
    _decoders(plan, kernels, G, source)
    _sde_times(plan, kernels, G, source)
    return Chain(plan, kernels, schedules, _source(g, inputs))


def _first_uses(g: nx.DiGraph) -> dict[str, tuple]:
    """kernel id -> the first step edge (a, b, attrs) that uses it, in one pass."""
    out: dict[str, tuple] = {}
    for a, b, d in g.edges(data=True):
        if d["kind"] == "step":
            for kid in (d["forward"], d["backward"]):
                out.setdefault(kid, (a, b, d))
    return out


def _kernel_of(g, use: tuple, k: dict, nets, schedules, n_data: int) -> nn.Module:
    # the state this kernel produces, and its step's number of bindings: from an edge using it
    a, b, d = use
    out = g.nodes[b if k["role"] == "forward" else a]
    inp = g.nodes[a if k["role"] == "forward" else b]
    T = g.graph["transitions"][d["transition"]]
    n_steps = T["hi"] - T["lo"] + 1 if T["var"] else 1
    kernel = _kernel(k, nets, schedules, out, numel(out), n_data, n_steps)
    if inp["dtype"] == "cat":  # the checker sized the net for this state one-hot (StateType.net_width)
        kernel.in_classes = inp["params"][0]
    return kernel


def _source(g, inputs: Inputs) -> nn.Module | None:
    G = g.graph
    src = g.nodes[G["source"]]
    if G["source_data"] is not None:  # a bridge: the source is drawn from a data set
        from gfdsl.runtime.data import load

        train, _ = load(G["source_data"], src, inputs)
        return K.DataSource(train)
    if not src["prior"]:
        return None
    p = G["kernels"][src["prior"]]
    return K.Prior(p["entry"], p["args"], numel(src), src["dtype"], src["params"][0] if src["params"] else 2)


def _plan(g, order: list[str]) -> Plan:
    G = g.graph
    index = {n: j for j, n in enumerate(order)}
    ctx_of: dict[str, list[str]] = {}
    for a, b, d in g.edges(data=True):
        if d["kind"] == "context":
            ctx_of.setdefault(b, []).append(a)
    steps = []
    for a, b in zip(order[:-1], order[1:]):
        d = g.edges[a, b]
        T = G["transitions"][d["transition"]]
        pos = (d["binding"][T["var"]] - T["lo"]) if T["var"] else 0
        bwd = G["kernels"][d["backward"]]
        steps.append(PlanStep(index[a], index[b], _key(d["forward"]),
                              None if bwd["entry"] == "inverse" else _key(d["backward"]), pos,
                              tuple(index[c] for c in sorted(ctx_of.get(b, []))), tuple(d["span"])))
    classes = tuple(g.nodes[n]["params"][0] if g.nodes[n]["dtype"] == "cat" else 0 for n in order)
    return Plan(tuple(steps), tuple(order), _groups(steps, "fwd"), _groups(steps, "bwd"), classes)


def _decoders(plan: Plan, kernels: nn.ModuleDict, G: dict, source: Source | None) -> None:
    """Tell each discretising ddpm_denoiser which step position writes the data state; one
    that never does would discretise nothing, which is a mistake in the spec."""
    last = plan.steps[-1]
    for key, k in kernels.items():
        if isinstance(k, K.DDPMDenoiser) and k.levels:
            if last.fwd != key:
                raise GfdslError([diag("E802", source, _kernel_span(G, key),
                                       message=f"ddpm_denoiser(levels = {k.levels}) discretises the step into the "
                                               "data state, but no step using it ends there",
                                       hint="use `levels` on the kernel of the step that produces the data")])
            k.decode_pos = last.pos


def _sde_times(plan: Plan, kernels: nn.ModuleDict, G: dict, source: Source | None) -> None:
    """A sampler's kernels read time t_k = k / T from the step's position: the j-th step
    from the source must be position j (the chain runs forward in time)."""
    for j, s in enumerate(plan.steps):
        for key in (s.fwd, s.bwd):
            k = kernels[key] if key is not None else None
            if isinstance(k, (S.ControlledSDE, S.BrownianBridge)) and s.pos != j:
                raise GfdslError([diag("E802", source, _kernel_span(G, key),
                                       message=f"this kernel's time runs from the source at t = 0, but the step "
                                               f"{j + 1} from the source is at position {s.pos + 1} of its range",
                                       hint="write the step forward in time: `step x[t - 1] -> x[t] for t in 1..T` "
                                            "with `source x[0] = 0`")])


def _kernel_span(G: dict, key: str):
    span = next(kk["span"] for kid, kk in G["kernels"].items() if _key(kid) == key)
    return Span(*span) if span else None


def _groups(steps, attr) -> tuple[tuple[int, ...], ...]:
    groups: dict = {}
    for j, s in enumerate(steps):
        groups.setdefault(getattr(s, attr) if getattr(s, attr) is not None else f"inv:{s.fwd}", []).append(j)
    return tuple(tuple(v) for v in groups.values())


def _kernel(k: dict, nets, schedules, out: dict, n_out: int, n_data: int, n_steps: int = 1) -> nn.Module:
    a = k["args"]
    e = k["entry"]
    net = nets[_key(a["net"])] if a.get("net") is not None else None
    if e == "gaussian":
        return K.Gaussian(net, a["std"], a["min_std"])
    if e == "bernoulli":
        return K.BernoulliK(net)
    if e == "categorical":
        return K.CategoricalK(net, out["params"][0] if out["dtype"] == "cat" else 2)
    if e == "ddpm_denoiser":
        return K.DDPMDenoiser(net, schedules[a["schedule"]], a["param"], a["variance"], a["levels"])
    if e == "ddpm_noising":
        return K.DDPMNoising(schedules[a["schedule"]])
    if e == "learned_noising":
        return K.LearnedNoising(schedules[a["schedule"]], net, a["max_log_var_shift"])
    if e == "affine_coupling":
        return Fl.AffineCoupling(net, a["parity"], n_out)
    if e == "maf_affine":
        return Fl.MAFAffine(net, n_out, bool(a["order"]))
    if e == "spline_coupling":
        return Fl.Coupling(net, a["parity"], n_out, Fl.spline(a["bins"], a["bound"]))
    if e == "spline_autoregressive":
        return Fl.Autoregressive(net, n_out, bool(a["order"]), Fl.spline(a["bins"], a["bound"]), zero_init=True)
    if e == "ode_flow":
        return O.ODEFlow(net, n_steps, a["solver"], a["trace"])
    if e == "lu_linear":
        return Fl.LULinear(net)
    if e == "next_token":
        classes = out["params"][0] if out["dtype"] == "cat" else 2
        return K.NextToken(net, classes, n_data, out["dtype"] == "binary", getattr(net, "autoregressive", False))
    if e == "truncate":
        return K.Truncate()
    if e == "controlled_sde":
        return S.ControlledSDE(net, a["sigma"], n_steps, a["langevin"], n_out, a["learned_variance"])
    if e == "brownian_bridge":
        return S.BrownianBridge(a["sigma"], n_steps, net, a["correction"])
    raise KeyError(e)


def _prior(g: nx.DiGraph, space: Chain) -> tuple[nn.ModuleDict, Chain]:
    """A posterior's frozen prior: the forward kernels again, over copies of their nets
    (filled by GfnModel.freeze_prior or from a run's checkpoint)."""
    G = g.graph
    fwd = {kid: k for kid, k in G["kernels"].items() if k["role"] == "forward"}
    used = {_key(str(k["args"]["net"])) for k in fwd.values() if "net" in k["args"]}
    prior_nets = nn.ModuleDict({n: construct("net", G["nets"][n.replace(":", ".")]["entry"],
                                             G["nets"][n.replace(":", ".")]["args"]) for n in sorted(used)})
    # (a posterior has no conditions: the checker refuses them, E612)
    n_data = numel(g.nodes[G["data"]])
    uses = _first_uses(g)
    kernels = nn.ModuleDict({_key(kid): _kernel_of(g, uses[kid], k, prior_nets, space.schedules, n_data)
                             for kid, k in fwd.items()})
    for p in prior_nets.parameters():
        p.requires_grad_(False)
    for key, k in kernels.items():  # the same decoder position as the posterior's kernel
        if isinstance(k, K.DDPMDenoiser):
            k.decode_pos = space.kernels[key].decode_pos
    return prior_nets, Chain(space.plan, kernels, space.schedules, space.prior)


# -- action spaces ----------------------------------------------------------------------------------


def _branching(G: dict, g: nx.DiGraph, nets: nn.ModuleDict) -> Branching:
    """The action notation's space: the actions compiled into a Space, the move step's
    kernels (the policies) naming their nets."""
    sp = G["space"]
    space = Space(sp["dtype"], sp["params"], sp["size"], G["actions"], sp["exit"])
    move = g.edges[sp["state"], sp["state"]]
    pf, pb = G["kernels"][move["forward"]], G["kernels"][move["backward"]]
    return Branching(space, nets, _key(str(pf["args"]["net"])),
                     _key(str(pb["args"]["net"])) if pb["entry"] == "softmax" else None, G["train"], sp["enumerable"])
