"""Diagrams of a model's DAG: SpecGraph -> plain graph-spec dict -> graphviz.Digraph.

Conventions (also printed as the diagram's legend):
  solid edge   forward policy P_F (generation), drawn along the DAG
  dashed edge  backward policy P_B (inference / noising), drawn against it
  blue, bold   learned kernel;  grey  fixed kernel
  dotted edge  context input (`given`), or where a folded plate meets a concrete state
  filled node  the data state; double outline: the source with its prior

An indexed step that unrolls to more than `unroll` edges is folded into a plate (a
cluster labelled with its range, e.g. "t = 1..100"), drawn once on template states
(`x[t] -> x[t - 1]`) and tied to the concrete boundary states it touches.
"""

from __future__ import annotations

import os
import shutil

import networkx as nx

from gfdsl.errors import GfdslError, diag
from gfdsl.files import atomic_write
from gfdsl.ir.graph import natural

LEARNED = "#1f5fbf"
FIXED = "#7a7a7a"
LEGEND = "solid: P_F (forward)   dashed: P_B (backward)   blue: learned   grey: fixed"


def _type(d: dict) -> str:
    p = f"({','.join(map(str, d['params']))})" if d["params"] else ""
    return f"{d['dtype']}{p}[{','.join(map(str, d['shape']))}]"


def _short(text: str, n: int = 40) -> str:
    """Wrap a long kernel call after its commas so edge labels stay narrow."""
    if len(text) <= n:
        return text
    lines, cur = [], ""
    for part in text.split(", "):
        if cur and len(cur) + len(part) + 2 > n:
            lines.append(cur + ",")
            cur = "  " + part
        else:
            cur = f"{cur}, {part}" if cur else part
    return "\n".join(lines + [cur])


def _kernel_label(k: dict) -> str:
    nets = [str(v) for a, v in sorted(k["args"].items()) if a == "net"]
    if k["entry"] == "inverse":
        return "inverse"
    return k["entry"] + (f" · {', '.join(nets)}" if nets else "")


def _edge_style(k: dict, direction: str) -> dict:
    learned = k["learned"] or (k["entry"] == "inverse")
    return {
        "style": "solid" if direction == "forward" else "dashed",
        "color": LEARNED if learned else FIXED,
        "fontcolor": LEARNED if learned else FIXED,
        "penwidth": "1.6" if learned else "1.0",
    }


def _space_spec(g: nx.DiGraph) -> dict:
    """A model with actions: the start state, the space with its actions as a loop
    (P_F along them, P_B along their derived inverses), exit to the object x, R(x)."""
    G = g.graph
    sp = G["space"]
    node = g.nodes[sp["state"]]
    start = {"int": f"all {sp['params'][0]}" if sp["dtype"] == "int" else "", "set": "empty set",
             "seq": "empty sequence"}[sp["dtype"]]
    moves = [a for a in G["actions"] if a["entry"] != "exit"]
    ex = G["actions"][-1]

    def acts(inverse: bool) -> str:
        by: dict = {}
        for a in moves:
            fam = a["id"].split("[")[0]
            by.setdefault(fam, []).append(a)
        parts = []
        for fam, items in by.items():
            e = items[0]["inverse"] if inverse else items[0]["entry"]
            parts.append(f"{fam}: {e}" + (f" ×{len(items)}" if len(items) > 1 else ""))
        return "\n".join(parts)

    move = g.edges[sp["state"], sp["state"]]
    pf, pb = G["kernels"][move["forward"]], G["kernels"][move["backward"]]

    def pol(p: dict) -> str:
        return p["entry"] + (f" · {p['args']['net']}" if "net" in p["args"] else "")

    def style(p: dict, direction: str) -> dict:
        return _edge_style(p, direction)

    nodes = [
        dict(id="s0", label=f"start\n{start}", attrs={"shape": "ellipse", "peripheries": "2"}),
        dict(id=sp["state"], label=f"{sp['state']}\n{_type(node)}\n{sp['states']} states",
             attrs={"shape": "ellipse"}),
        dict(id="x", label=f"x\nexit {ex['args']['when']}", attrs={"shape": "ellipse", "style": "filled",
                                                                     "fillcolor": "#d9d9d9"}),
        _target_node(G),
    ]
    edges = [
        dict(src="s0", dst=sp["state"], label="", attrs={"style": "dotted", "arrowhead": "none"}),
        dict(src=sp["state"], dst=sp["state"], label=f"P_F: {pol(pf)}\n{acts(False)}",
             attrs={**style(pf, "forward"), "tailport": "ne", "headport": "se"}),
        dict(src=sp["state"], dst=sp["state"], label=f"P_B: {pol(pb)}\n{acts(True)}",
             attrs={**style(pb, "backward"), "dir": "back", "tailport": "sw", "headport": "nw"}),
        dict(src=sp["state"], dst="x", label=f"{ex['id']}: exit", attrs=style(pf, "forward")),
        dict(src="x", dst="R", label="", attrs={"style": "dotted", "arrowhead": "none"}),
    ]
    c_nodes, c_edges = _conditions(G, {move["forward"]: [sp["state"]], move["backward"]: [sp["state"]]})
    return dict(name=G["name"], title=_title(G), legend=LEGEND, nodes=nodes + c_nodes, edges=edges + c_edges,
                plates=[])


def _target_node(G: dict) -> dict:
    r = G["reward"]
    text = f"R(x) = {r['entry']}" if r["form"] == "reward" else f"R(x) = exp(-E), E = {r['entry']}"
    if r.get("temper"):
        text = (f"R(x) = {r['entry']} ** {r['temper']}" if r["form"] == "reward"
                else f"R(x) = exp(-{r['temper']} E), E = {r['entry']}")
    return dict(id="R", label=text, attrs={"shape": "box", "style": "rounded"})


def _conditions(G: dict, drawn: dict[str, list[str]]) -> tuple[list, list]:
    """Each condition as an input node, with an edge to every state whose drawn kernel
    reads it through a net (labelled with the nets), and to R(x) when it tempers the
    reward. drawn: kernel id -> the nodes where the diagram draws it."""
    nodes, edges = [], []
    for name, c in sorted((G.get("conditions") or {}).items()):
        kind = f"int({c['lo']}, {c['hi']})" if c["kind"] == "int" else f"real[{c['dim']}]"
        where = f"~ {c['prior']['entry']}" + "({:g}, {:g})".format(*c["prior"]["support"]) if c["prior"] else {"labels": "from the labels", "uniform": "uniform"}.get(
            c["source"], c["source"])
        cid = f"cond.{name}"
        nodes.append(dict(id=cid, label=f"condition {name}\n{kind}\n{where}",
                          attrs={"shape": "invhouse", "style": "filled", "fillcolor": "#fff2cc"}))
        at: dict[str, list[str]] = {}
        for kid, k in G["kernels"].items():
            nets = sorted({str(v) for v in k["args"].values() if isinstance(v, str) and v in c["readers"]})
            for node in (drawn.get(kid) or []) if nets else []:
                at.setdefault(node, [])
                at[node] += [n for n in nets if n not in at[node]]
        for node, nets in at.items():
            edges.append(dict(src=cid, dst=node, label=", ".join(nets), attrs={"style": "dotted", "color": LEARNED,
                                                                                "fontcolor": LEARNED}))
        if (G["reward"] or {}).get("temper") == name:
            edges.append(dict(src=cid, dst="R", label="", attrs={"style": "dotted", "color": FIXED}))
    return nodes, edges


def _title(G: dict) -> str:
    def terms(ts):
        return " + ".join(f"{t['coef']:g} * {t['term']}" if t["coef"] != 1 else t["term"] for t in ts)

    objective = terms(G["objective"])
    if G["prior_objective"]:
        objective = f"{terms(G['prior_objective'])} then {objective}"
    return f"{G['name']}   objective: {objective}" if objective else G["name"]


def graph_spec(g: nx.DiGraph, unroll: int = 6) -> dict:
    """A plain dict describing the diagram (nodes, edges, plates); deterministic."""
    G = g.graph
    if G["space"] is not None:
        return _space_spec(g)
    kernels = G["kernels"]
    by_tid: dict[str, list] = {}
    for a, b, d in g.edges(data=True):
        if d["kind"] == "step":
            by_tid.setdefault(d["transition"], []).append((a, b, d))
    folded = {t for t, es in by_tid.items() if G["transitions"][t]["var"] and len(es) > unroll}
    # boundary: nodes that a non-folded edge touches, and the source and data states
    keep = {G["source"], G["data"]}
    for a, b, d in g.edges(data=True):
        if d.get("transition") not in folded or d["kind"] == "context":
            keep |= {a, b}
    if not folded:
        keep = set(g.nodes)
    nodes, edges, plates = [], [], []
    drawn: dict[str, list[str]] = {}  # kernel id -> nodes where its step is drawn (a net reads the source)
    order = sorted(g.nodes, key=lambda n: (g.nodes[n]["family"], g.nodes[n]["index"] or 0))
    for n in order:
        if n not in keep:
            continue
        d = g.nodes[n]
        label = f"{n}\n{_type(d)}"
        attrs = {"shape": "ellipse"}
        if d["role"] == "source":
            prior = kernels.get(d["prior"]) if d["prior"] else None
            if prior and prior["entry"] == "point":
                label += "\n= " + _point(prior["args"]["value"])
            elif prior or G["source_data"]:
                label += f"\n~ {(prior or G['source_data'])['entry']}"
            attrs["peripheries"] = "2"
        if d["role"] in ("data", "terminal"):
            attrs.update(style="filled", fillcolor="#d9d9d9")
        nodes.append(dict(id=n, label=label, attrs=attrs))
    for tid in sorted(by_tid, key=natural):
        es = sorted(by_tid[tid], key=lambda e: list(e[2]["binding"].values()))
        if tid in folded:
            T = G["transitions"][tid]
            s_id, d_id = f"{tid}.src", f"{tid}.dst"
            f0, b0 = kernels[es[0][2]["forward"]], kernels[es[0][2]["backward"]]
            calls = T.get("calls", {})
            plate_edges = [
                dict(src=s_id, dst=d_id, label=_short(calls.get("forward", f0["entry"])),
                     attrs=_edge_style(f0, "forward")),
                dict(src=d_id, dst=s_id, label=_short(calls.get("backward", b0["entry"])),
                     attrs={**_edge_style(b0, "backward"), "constraint": "false"}),
            ]
            for _, _, d in es:
                for kid, node in ((d["forward"], s_id), (d["backward"], d_id)):
                    if node not in drawn.setdefault(kid, []):
                        drawn[kid].append(node)
            plates.append(dict(
                id=f"cluster_{tid}", label=f"{T['var']} = {T['lo']}..{T['hi']}  ({len(es)} steps)",
                nodes=[dict(id=s_id, label=T["src"], attrs={"shape": "ellipse", "style": "dashed"}),
                       dict(id=d_id, label=T["dst"], attrs={"shape": "ellipse", "style": "dashed"})],
                edges=plate_edges))
            for a, b, d in es:
                bind = ", ".join(f"{k} = {v}" for k, v in d["binding"].items())
                if a in keep:
                    edges.append(dict(src=a, dst=s_id, label=bind, attrs={"style": "dotted", "arrowhead": "none"}))
                if b in keep:
                    edges.append(dict(src=d_id, dst=b, label=bind, attrs={"style": "dotted", "arrowhead": "none"}))
            continue
        for a, b, d in es:
            drawn.setdefault(d["forward"], []).append(a)
            drawn.setdefault(d["backward"], []).append(b)
            fk, bk = kernels[d["forward"]], kernels[d["backward"]]
            # padding keeps the forward and backward labels of one step apart
            edges.append(dict(src=a, dst=b, label=_kernel_label(fk) + "    ", attrs=_edge_style(fk, "forward")))
            edges.append(dict(src=b, dst=a, label="    " + _kernel_label(bk),
                              attrs={**_edge_style(bk, "backward"), "constraint": "false"}))
    for a, b, d in sorted(g.edges(data=True), key=lambda e: (e[0], e[1])):
        if d["kind"] == "context":
            edges.append(dict(src=a, dst=b, label="context", attrs={"style": "dotted", "color": FIXED}))
    if G["reward"] is not None:  # the target the terminal state is balanced against
        nodes.append(_target_node(G))
        edges.append(dict(src=G["data"], dst="R", label="", attrs={"style": "dotted", "arrowhead": "none"}))
    c_nodes, c_edges = _conditions(G, drawn)
    return dict(name=G["name"], title=_title(G), legend=LEGEND, nodes=nodes + c_nodes, edges=edges + c_edges,
                plates=plates)


def _point(v: list) -> str:
    return f"{v[0]:g}" if len(set(v)) == 1 else "[" + ", ".join(f"{x:g}" for x in v) + "]"


def to_digraph(spec: dict):
    """Graph-spec dict -> graphviz.Digraph (top to bottom, source first)."""
    import graphviz

    dot = graphviz.Digraph(spec["name"])
    dot.attr(rankdir="TB", label=f"{spec['title']}\n{spec['legend']}", labelloc="b", fontname="Helvetica",
             fontsize="11")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    for n in spec["nodes"]:
        dot.node(n["id"], n["label"], **n["attrs"])
    for p in spec["plates"]:
        with dot.subgraph(name=p["id"]) as c:
            c.attr(label=p["label"], style="rounded", color=FIXED, fontcolor=FIXED)
            for n in p["nodes"]:
                c.node(n["id"], n["label"], **n["attrs"])
            for e in p["edges"]:
                c.edge(e["src"], e["dst"], e["label"], **e["attrs"])
    for e in spec["edges"]:
        dot.edge(e["src"], e["dst"], e["label"], **e["attrs"])
    return dot


def dot_source(g: nx.DiGraph, unroll: int = 6) -> str:
    return to_digraph(graph_spec(g, unroll)).source


def write(g: nx.DiGraph, out: str, unroll: int = 6) -> None:
    """Write the diagram to `out` (.dot, .svg or .png); atomically, never half a file."""
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if ext not in ("dot", "gv", "svg", "png", "pdf"):
        raise GfdslError([diag("E707", None, None, path=out, ext=ext or out)])
    dot = to_digraph(graph_spec(g, unroll))
    if ext in ("dot", "gv"):
        data = dot.source.encode("utf-8")
    else:
        if shutil.which("dot") is None:
            raise GfdslError([diag("E705", None, None, path=out, fmt=f".{ext}")])
        data = dot.pipe(format=ext)
    atomic_write(out, data)
