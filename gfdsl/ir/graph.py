"""The IR: an unrolled networkx DiGraph of concrete states, edges in the forward
(generative) direction, plain data attributes only (no torch objects, no callables).

Every model is the same graph: states, steps with a forward (P_F) and a backward (P_B)
kernel, a source, a terminal state and a target.

Nodes ("x[3]", "z1"):  family, index, dtype, params, shape, role (source | data |
                       terminal | latent | space), prior (kernel id, source only), span
Edges (src -> dst):    kind, transition ("step1"), binding ({"t": 3}), forward,
                       backward (kernel ids), span. Kinds: `step` (one concrete step),
                       `context` (an extra input, `given`), `move` and `exit` (below)
Graph attributes:      name, dims, schedules, nets, kernels, transitions, objective,
                       prior_objective (a posterior's first stage), dataset, reward
                       (with `temper`, a condition), conditions (kind, range or size,
                       prior, source, the nets reading it),
                       source_data (a data set as the source), space, actions, train,
                       source, data (the terminal state)

Discrete spaces grown by actions (grids, sets, sequences) are branching DAGs too large
to unroll, so their graph is at the level of the state family: a node for the space's
state (role "space") and one for the terminal object x (role "terminal"), a self-loop
`move` edge whose kernels are the policies over the actions (each with its derived
inverse) and an `exit` edge. `space` holds its facts (sizes, encoding width, number of
moves, longest trajectory, whether exact evaluation enumerates it).

`validate()` checks the structure with networkx itself (cycles, reachability, one
entering step per state, context edges from ancestors); `dump()` is the canonical,
sorted text behind `gfdsl compile --dump ir`.
"""

from __future__ import annotations

import json
import re

import networkx as nx

from gfdsl.errors import GfdslError, diag
from gfdsl.lang.check import CheckedSpec
from gfdsl.lang.source import Span


def numel(node: dict) -> int:
    """Values in one state of an IR state node (the product of its shape)."""
    p = 1
    for s in node["shape"]:
        p *= s
    return p


def build(spec: CheckedSpec) -> nx.DiGraph:
    """CheckedSpec -> SpecGraph (a networkx DiGraph with plain attributes)."""
    g = nx.DiGraph()
    g.graph.update(
        name=spec.name,
        dims=dict(spec.dims),
        schedules={n: dict(entry=v["entry"], args=v["args"], span=v["span"].as_tuple())
                   for n, v in spec.schedules.items()},
        nets={n: dict(entry=v["entry"], args=v["args"], family=v["family"], span=v["span"].as_tuple())
              for n, v in spec.nets.items()},
        kernels={k: dict(entry=v.entry, args=v.args, learned=v.learned, caps=list(v.caps), role=v.role,
                         inverse_of=v.inverse_of, span=v.span.as_tuple())
                 for k, v in spec.kernels.items()},
        transitions={t: dict(text=v.text, src=v.src, dst=v.dst, var=v.var, lo=v.lo, hi=v.hi,
                             calls=dict(v.calls), span=v.span.as_tuple())
                     for t, v in spec.transitions.items()},
        objective=_terms(spec.objective),
        prior_objective=_terms(spec.prior_objective),
        dataset=_call(spec.dataset),
        reward=None if spec.reward is None else {**_call(spec.reward), "form": spec.reward["form"],
                                                 "temper": spec.reward.get("temper")},
        conditions={n: dict(kind=c["kind"], lo=c["lo"], hi=c["hi"], dim=c["dim"], prior=c["prior"],
                            source=c.get("source"), readers=list(c["readers"]), span=c["span"].as_tuple())
                    for n, c in spec.conditions.items()},
        source_data=_call(spec.source_data),
        space=None if spec.space is None else dict(spec.space),
        actions=[dict(id=a["id"], entry=a["entry"], args=a["args"], inverse=INVERSE.get(a["entry"]),
                      span=a["span"].as_tuple()) for a in spec.actions],
        train=dict(spec.train),
        train_spans={n: sp.as_tuple() for n, sp in spec.train_spans.items()},
        source=spec.source_node,
        data=spec.data_node,
    )
    for n in spec.nodes.values():
        g.add_node(n.id, family=n.family, index=n.index, dtype=n.type.dtype, params=list(n.type.params),
                   shape=list(n.type.shape), role=n.role, prior=n.prior, span=n.span.as_tuple())
    for e in spec.edges:
        if g.has_edge(e.src, e.dst):
            # two steps (or a step and a context) between the same states: keep both visible
            g.edges[e.src, e.dst].setdefault("also", []).append(e.transition)
            continue
        attrs = dict(kind=e.kind, transition=e.transition, binding=dict(e.binding), span=e.span.as_tuple())
        if e.kind != "context":
            attrs.update(forward=e.forward, backward=e.backward)
        g.add_edge(e.src, e.dst, **attrs)
    return g


# the inverse gfdsl derives for each action (gfdsl.runtime.spaces implements both)
INVERSE = {"increment": "decrement", "add": "remove", "append": "drop last", "prepend": "drop first"}


def _terms(terms: list[dict]) -> list[dict]:
    return [dict(coef=t["coef"], term=t["term"], args=t["args"], span=t["span"].as_tuple()) for t in terms]


def _call(c: dict | None) -> dict | None:
    return None if c is None else dict(entry=c["entry"], args=c["args"], span=c["span"].as_tuple())


def _span(t) -> Span:
    return Span(*t) if t else Span(1, 1, 1, 1)


def steps_view(g: nx.DiGraph) -> nx.DiGraph:
    """The subgraph of the steps between distinct states: `step` and `exit` edges (context
    edges and the self-loop of an action space's `move` removed)."""
    return nx.subgraph_view(g, filter_edge=lambda a, b: g.edges[a, b]["kind"] in ("step", "exit"))


def _graph_of(g: nx.DiGraph, kinds: tuple[str, ...]) -> nx.DiGraph:
    """A plain DiGraph of g's edges of these kinds (every node kept): built once in
    linear time, so that the checks below touch each edge a constant number of times
    (a filtered view calls a Python predicate on every edge at every access)."""
    h = nx.DiGraph()
    h.add_nodes_from(g.nodes)
    h.add_edges_from((a, b) for a, b, d in g.edges(data=True) if d["kind"] in kinds)
    return h


def validate(g: nx.DiGraph, source) -> None:
    """Structural checks on the unrolled DAG; raises GfdslError with every problem.
    Linear in the number of states and edges: one topological sort for acyclicity (a
    cycle is looked for only when there is one, from a node of a strongly connected
    component), one search each way for reachability, ancestor tests by DFS intervals
    on the forest of steps (every state has one parent, checked first)."""
    diags = []

    def err(code, span, **kw):
        diags.append(diag(code, source, _span(span), **kw))

    for a, b, d in g.edges(data=True):
        if d.get("also"):
            err("E504", d["span"], state=b, hint=f"{a} -> {b} is declared by more than one step")
    # the move self-loop of an action space is acyclic by construction (every move raises a level)
    cyc = _graph_of(g, ("step", "exit", "context"))
    if not nx.is_directed_acyclic_graph(cyc):
        cycle = _a_cycle(cyc)
        path = " -> ".join([cycle[0][0]] + [v for _, v in cycle])
        err("E501", g.edges[cycle[0][0], cycle[0][1]]["span"], cycle=path)
        raise GfdslError(diags)
    steps = _graph_of(g, ("step", "exit"))
    src, data = g.graph["source"], g.graph["data"]
    one_parent = True
    for n in g.nodes:
        ins = list(steps.predecessors(n))
        if n == src and ins:
            err("E507", g.edges[ins[0], n]["span"], message=f"the source {n} is entered by a step",
                hint="the source is where every forward trajectory starts; no step may lead into it")
        elif len(ins) > 1:
            one_parent = False
            err("E504", g.edges[ins[1], n]["span"], state=n,
                hint=f"it is entered from {' and '.join(sorted(ins))}; each state needs exactly one parent here")
    if data is not None and steps.out_degree(data):
        out = next(iter(steps.successors(data)))
        err("E507", g.edges[data, out]["span"], message=f"the data state {data} has a step leading out of it",
            hint="the data state is where forward trajectories end; remove the step or move `data`")
    if src is not None and data is not None:
        below = nx.descendants(steps, src)
        if data not in below:
            err("E502", g.nodes[data]["span"], data=data, start=src)
        else:
            on_path = below & nx.ancestors(steps, data) | {src, data}
            off = [n for n in g.nodes if n not in on_path]
            if off:  # one is enough: the rest of an unconnected family says the same
                n = min(off, key=_order_key(g))
                err("E505", g.nodes[n]["span"], state=n)
    if one_parent:
        _contexts(g, steps, err)
    if diags:
        raise GfdslError(diags)


def _a_cycle(h: nx.DiGraph) -> list:
    """One cycle of a graph known to have one, found from a node of a non-trivial strongly
    connected component (networkx's find_cycle without a start is quadratic on chains)."""
    first = {n: i for i, n in enumerate(h.nodes)}  # declaration order: the same cycle every run
    comps = [c for c in nx.strongly_connected_components(h) if len(c) > 1 or any(h.has_edge(n, n) for n in c)]
    n = min((min(c, key=first.get) for c in comps), key=first.get)
    return nx.find_cycle(h, source=n)


def _contexts(g: nx.DiGraph, steps: nx.DiGraph, err) -> None:
    """E506 unless every context edge a -> b comes from b's parent or one of its
    ancestors: O(1) per edge by entry/exit times of one iterative DFS of the forest."""
    ctx = [(a, b, d) for a, b, d in g.edges(data=True) if d["kind"] == "context"]
    if not ctx:
        return
    tin, tout, clock = {}, {}, 0
    for root in (n for n in steps.nodes if steps.in_degree(n) == 0):
        stack = [(root, False)]
        while stack:
            n, done = stack.pop()
            if done:
                tout[n] = clock
                clock += 1
                continue
            tin[n] = clock
            clock += 1
            stack.append((n, True))
            stack.extend((c, False) for c in steps.successors(n))
    for a, b, d in ctx:
        parent = next(iter(steps.predecessors(b)), None)
        if parent is None or not (tin[a] <= tin[parent] and tout[parent] <= tout[a]):
            err("E506", d["span"], ctx=a, state=b)


def _order_key(g):
    def key(n):
        d = g.nodes[n]
        return (d["family"], d["index"] if d["index"] is not None else -1)

    return key


# -- canonical text ---------------------------------------------------------------------------


def natural(s: str) -> list:
    """Sort key that orders 'st[2]' before 'st[10]'."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def _fmt(v) -> str:
    """Stable, compact JSON for attribute values (sorted keys, no whitespace noise)."""
    return json.dumps(v, sort_keys=True, separators=(", ", ": "))


def dump(g: nx.DiGraph) -> str:
    """The canonical text of an IR: sorted, stable, owned by gfdsl (not a serializer)."""
    G = g.graph
    out = [f"model {G['name']}", "dims " + _fmt(G["dims"]), f"source {G['source']}", f"data {G['data']}"]
    for key, word in (("dataset", "dataset"), ("source_data", "source data"), ("reward", None)):
        c = G[key]
        if c:
            temper = f" ** {c['temper']}" if c.get("temper") else ""
            out.append(f"{word or c['form']} {c['entry']} {_fmt(c['args'])}{temper}")
    for name, c in sorted(G.get("conditions", {}).items()):
        kind = f"int({c['lo']}, {c['hi']})" if c["kind"] == "int" else f"real[{c['dim']}]"
        prior = f" ~ {c['prior']['entry']} {_fmt(c['prior']['args'])}" if c["prior"] else ""
        out.append(f"condition {name} : {kind}{prior} from {c['source']} read by {','.join(c['readers'])}")
    if G["space"]:
        out.append("space " + _fmt(G["space"]))
    for name in sorted(G["schedules"], key=natural):
        s = G["schedules"][name]
        out.append(f"schedule {name} = {s['entry']} {_fmt(s['args'])}")
    for name in sorted(G["nets"], key=natural):
        s = G["nets"][name]
        out.append(f"net {name} = {s['entry']} {_fmt(s['args'])}")
    for a in G["actions"]:
        inv = f" inverse={a['inverse']}" if a["inverse"] else ""
        out.append(f"action {a['id']} = {a['entry']} {_fmt(a['args'])}{inv}")
    for kid in sorted(G["kernels"], key=natural):
        k = G["kernels"][kid]
        tag = "learned" if k["learned"] else "fixed"
        extra = f" inverse_of={k['inverse_of']}" if k["inverse_of"] else ""
        out.append(f"kernel {kid} = {k['entry']} {_fmt(k['args'])} {k['role']} {tag} caps={','.join(k['caps']) or '-'}"
                   + extra)
    for tid in sorted(G["transitions"], key=natural):
        out.append(f"transition {tid}: {G['transitions'][tid]['text']}")
    for n in sorted(g.nodes, key=_order_key(g)):
        d = g.nodes[n]
        shape = f"{d['dtype']}{'(' + ','.join(map(str, d['params'])) + ')' if d['params'] else ''}" \
                f"[{','.join(map(str, d['shape']))}]"
        prior = f" prior={d['prior']}" if d["prior"] else ""
        out.append(f"node {n} {shape} {d['role']}{prior}")
    for a, b in sorted(g.edges, key=lambda e: (_order_key(g)(e[0]), _order_key(g)(e[1]))):
        d = g.edges[a, b]
        bind = " " + " ".join(f"{k}={v}" for k, v in sorted(d["binding"].items())) if d["binding"] else ""
        if d["kind"] == "context":
            out.append(f"edge {a} -> {b} context {d['transition']}{bind}")
        else:
            back = f" B={d['backward']}" if d["backward"] else ""
            out.append(f"edge {a} -> {b} {d['kind']} {d['transition']}{bind} F={d['forward']}{back}")
    for word, key in (("prior objective", "prior_objective"), ("objective", "objective")):
        for t in G[key]:
            out.append(f"{word} {t['coef']:g} * {t['term']} {_fmt(t['args'])}")
    out.append("train " + _fmt(G["train"]))
    return "\n".join(out) + "\n"
