"""One contract over every shipped spec: it checks, validates, renders, is canonical,
cites its paper, and its IR is a single-source DAG ending in its data state."""

from __future__ import annotations

import networkx as nx
import pytest

from gfdsl import ir

from gfdsl.ir import render
from gfdsl.driver import check_file
from tests.conftest import SPECS

FAMILIES = {"ddpm", "hvae", "schrodinger_bridge", "autoregressive", "realnvp", "mle_gfn"}


def test_every_family_of_the_design_has_a_spec():
    assert FAMILIES <= {s.stem for s in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_contract(spec):
    text = spec.read_text(encoding="utf-8")
    assert text.startswith("#") and "arXiv:" in text.split("\nmodel ")[0], "header comment must cite its paper"
    c = check_file(spec)
    g = c.graph
    if g.graph["kind"] == "reward":
        return _reward_contract(g)
    steps = ir.steps_view(g)
    assert nx.is_directed_acyclic_graph(g)
    src, data = g.graph["source"], g.graph["data"]
    assert steps.in_degree(src) == 0 and steps.out_degree(data) == 0
    assert all(steps.in_degree(n) == 1 for n in g.nodes if n != src)
    assert nx.has_path(steps, src, data)
    for *_, d in steps.edges(data=True):
        assert d["forward"] in g.graph["kernels"] and d["backward"] in g.graph["kernels"]
    assert any(k["learned"] for k in g.graph["kernels"].values())
    dot = render.dot_source(g)
    assert src in dot and data in dot
    assert g.graph["objective"] and g.graph["dataset"]


def _reward_contract(g):
    """Reward-driven specs: one space, moves with a derived inverse, one exit, a reward,
    both policies, a learned P_F, reward objectives, an enumerable default size (so the
    shipped spec is scored exactly) and a diagram naming the space and the object x."""
    G = g.graph
    moves, ex = G["actions"][:-1], G["actions"][-1]
    assert moves and all(a["inverse"] for a in moves) and ex["entry"] == "exit"
    assert G["reward"]["entry"] and set(G["policies"]) == {"forward", "backward"}
    assert G["policies"]["forward"]["learned"]
    assert G["space"]["enumerable"] and G["space"]["n_moves"] == len(moves)
    assert {t["term"] for t in G["objective"]} <= {"tb", "db", "subtb", "fm", "vargrad"}
    assert [d["kind"] for *_, d in sorted(g.edges(data=True), key=lambda e: e[2]["kind"])] == ["exit", "move"]
    dot = render.dot_source(g)
    assert G["space"]["state"] in dot and "R(x)" in dot
