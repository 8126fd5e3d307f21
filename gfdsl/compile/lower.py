"""Lowering: a validated SpecGraph -> GfnModel (an nn.Module) with a static Plan.

Nets are built once into a ModuleDict and shared by name; schedules become buffers; each
kernel id of the IR becomes one kernel module; the chain of steps from source to data
becomes a tuple of PlanSteps, with the steps that share a kernel grouped for batched
evaluation. Problems found only here (an objective without a run-time implementation,
L_simple on a structure it does not fit) are diagnostics with the spec's line and column.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import torch
from torch import nn

import gfdsl.runtime  # noqa: F401  (switches off distribution validation)
from gfdsl import ir
from gfdsl.errors import GfdslError, diag
from gfdsl.engine.model import GfnModel, Plan, PlanStep
from gfdsl.engine.reward_model import RewardGfn
from gfdsl.runtime import kernels as K
from gfdsl.runtime import nets as N
from gfdsl.runtime.discrete import Reward, Space
from gfdsl.runtime.objectives import Objective
from gfdsl.runtime.schedules import Schedule
from gfdsl.lang.source import Source, Span


def _key(name: str) -> str:
    """ModuleDict keys may not contain '.': 'step1.forward[k=2]' -> 'step1:forward[k=2]'."""
    return name.replace(".", ":")


def chain(g: nx.DiGraph) -> list[str]:
    """States from source to data along step edges (validate() guarantees one parent each)."""
    steps = ir.steps_view(g)
    order = [g.graph["source"]]
    while order[-1] != g.graph["data"]:
        nxt = [b for b in steps.successors(order[-1]) if g.graph["data"] == b or nx.has_path(steps, b, g.graph["data"])]
        order.append(nxt[0])
    return order


def lower(g: nx.DiGraph, source: Source | None = None) -> GfnModel:
    G = g.graph
    if G.get("kind") == "reward":
        return lower_reward(g, source)
    nodes = g.nodes
    schedules = nn.ModuleDict({n: Schedule(s["entry"], s["args"]) for n, s in G["schedules"].items()})
    nets = nn.ModuleDict({_key(n): N.build(v["entry"], v["args"]) for n, v in G["nets"].items()})
    order = chain(g)
    data = nodes[G["data"]]
    numel_data = int(torch.tensor(data["shape"]).prod()) if data["shape"] else 1

    def numel(n):
        p = 1
        for s in nodes[n]["shape"]:
            p *= s
        return p

    kernels = nn.ModuleDict()
    for kid, k in G["kernels"].items():
        if k["role"] == "prior" or k["entry"] == "inverse":
            continue
        # the state this kernel produces: any edge that uses it tells us its shape
        edge = next((a, b) for a, b, d in g.edges(data=True)
                    if d["kind"] == "step" and kid in (d.get("forward"), d.get("backward")))
        out_node = edge[1] if k["role"] == "forward" else edge[0]
        kernels[_key(kid)] = _kernel(k, nets, schedules, nodes[out_node], numel(out_node), numel_data)
    prior = None
    src = nodes[G["source"]]
    if src["prior"]:
        p = G["kernels"][src["prior"]]
        prior = K.Prior(p["entry"], p["args"], numel(G["source"]), src["dtype"],
                        src["params"][0] if src["params"] else 2)
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
    plan = Plan(tuple(steps), tuple(order), _groups(steps, "fwd"), _groups(steps, "bwd"))
    _decoders(plan, kernels, G, source)
    attrs = {k: G[k] for k in ("name", "dims", "objective", "dataset", "train", "source", "data")}
    model = GfnModel(attrs, plan, nets, kernels, schedules, prior, tuple(data["shape"]), data["dtype"])
    model.objective = Objective(model, G["objective"], source)
    return model


def _decoders(plan: Plan, kernels: nn.ModuleDict, G: dict, source: Source | None) -> None:
    """Tell each discretising ddpm_denoiser which step position writes the data state; one
    that never does would discretise nothing, which is a mistake in the spec."""
    last = plan.steps[-1]
    for key, k in kernels.items():
        if isinstance(k, K.DDPMDenoiser) and k.levels:
            if last.fwd != key:
                span = next(kk["span"] for kid, kk in G["kernels"].items() if _key(kid) == key)
                raise GfdslError([diag("E802", source, Span(*span) if span else None,
                                       message=f"ddpm_denoiser(levels = {k.levels}) discretises the step into the "
                                               "data state, but no step using it ends there",
                                       hint="use `levels` on the kernel of the step that produces the data")])
            k.decode_pos = last.pos


def _groups(steps, attr) -> tuple[tuple[int, ...], ...]:
    groups: dict = {}
    for j, s in enumerate(steps):
        groups.setdefault(getattr(s, attr) if getattr(s, attr) is not None else f"inv:{s.fwd}", []).append(j)
    return tuple(tuple(v) for v in groups.values())


def _kernel(k: dict, nets, schedules, out: dict, n_out: int, n_data: int) -> nn.Module:
    a = k["args"]
    e = k["entry"]
    net = nets[_key(a["net"])] if "net" in a else None
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
        return K.AffineCoupling(net, a["parity"], n_out)
    if e == "maf_affine":
        return K.MAFAffine(net, n_out, bool(a["order"]))
    if e == "next_token":
        classes = out["params"][0] if out["dtype"] == "cat" else 2
        return K.NextToken(net, classes, n_data, out["dtype"] == "binary", isinstance(net, N.MADE))
    if e == "truncate":
        return K.Truncate()
    raise KeyError(e)


def lower_reward(g, source) -> RewardGfn:
    """A reward-kind IR -> RewardGfn (nets built once, actions compiled into a Space)."""
    G = g.graph
    sp = G["space"]
    space = Space(sp["dtype"], sp["params"], sp["size"], G["actions"], sp["exit"])
    nets = nn.ModuleDict({_key(n): N.build(v["entry"], v["args"]) for n, v in G["nets"].items()})
    spec_dir = Path(source.path).resolve().parent if source is not None and source.path else None
    reward = Reward(G["reward"]["entry"], G["reward"]["args"], space, spec_dir)
    pol = G["policies"]
    pf = _key(pol["forward"]["args"]["net"])
    pb = _key(pol["backward"]["args"]["net"]) if pol["backward"]["entry"] == "softmax" else None
    terms = [(float(t["coef"]), t["term"], {k: (_key(v) if k == "flow" else v) for k, v in t["args"].items()})
             for t in G["objective"]]
    attrs = {k: G[k] for k in ("name", "dims", "objective", "train", "space", "reward", "kind")}
    attrs["dataset"] = None
    return RewardGfn(attrs, space, nets, pf, pb, reward, terms, G["train"])
