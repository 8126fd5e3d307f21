"""One contract over every shipped spec: it checks, validates, renders, is canonical,
cites its paper, its IR is a single-source DAG ending in its terminal state, and it
goes through the whole engine: lower -> 2 training steps -> sample -> eval."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from gfdsl import ir
from gfdsl.driver import check_file
from gfdsl.ir import render
from tests.conftest import SPECS

FAMILIES = {"ddpm", "hvae", "schrodinger_bridge", "autoregressive", "realnvp", "mle_gfn", "hypergrid", "bitseq",
            "sampler_gmm", "sampler_gmm25", "sampler_funnel", "sampler_manywell", "posterior_ddpm", "bridge_moons_8gaussians"}


def test_every_family_of_the_design_has_a_spec():
    assert FAMILIES <= {s.stem for s in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_contract(spec):
    text = spec.read_text(encoding="utf-8")
    assert text.startswith("#") and "arXiv:" in text.split("\nmodel ")[0], "header comment must cite its paper"
    c = check_file(spec)
    g = c.graph
    G = g.graph
    assert G["dataset"] is not None or G["reward"] is not None  # every model has a target
    assert G["objective"] and any(k["learned"] for k in G["kernels"].values())
    dot = render.dot_source(g)
    assert G["source"] in dot and G["data"] in dot
    for name, cond in (G.get("conditions") or {}).items():  # an input node feeding its nets' states
        assert cond["readers"] and f'"cond.{name}" ->' in dot
    if G["space"] is not None:
        return _space_contract(g, dot)
    steps = ir.steps_view(g)
    assert nx.is_directed_acyclic_graph(g)
    src, data = G["source"], G["data"]
    assert steps.in_degree(src) == 0 and steps.out_degree(data) == 0
    assert all(steps.in_degree(n) == 1 for n in g.nodes if n != src)
    assert nx.has_path(steps, src, data)
    for *_, d in steps.edges(data=True):
        assert d["forward"] in G["kernels"] and d["backward"] in G["kernels"]


def _space_contract(g, dot):
    """Specs in action notation: one space, moves with a derived inverse, one exit, a
    reward, both policies as the move step's kernels, a learned P_F, reward objectives,
    an enumerable default size (so the shipped spec is scored exactly), and a diagram
    naming the space and R(x)."""
    G = g.graph
    moves, ex = G["actions"][:-1], G["actions"][-1]
    assert moves and all(a["inverse"] for a in moves) and ex["entry"] == "exit"
    s = G["space"]["state"]
    move = g.edges[s, s]
    assert move["kind"] == "move" and g.edges[s, "x"]["kind"] == "exit"
    assert G["kernels"][move["forward"]]["learned"] and move["backward"] in G["kernels"]
    assert G["space"]["enumerable"] and G["space"]["n_moves"] == len(moves)
    assert {t["term"] for t in G["objective"]} <= {"tb", "db", "subtb", "fm", "vargrad"}
    assert s in dot and "R(x)" in dot


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_runs_through_the_engine(spec, tmp_path):
    """check -> lower -> 2 training steps -> sample -> eval, on the shipped spec as it is
    (tiny batch and evaluation budgets; a posterior's prior stage of 2 steps)."""
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions, eval_run, sample_run
    from gfdsl.runtime.conditions import label

    out = tmp_path / "run"
    s = train(str(spec), RunOptions(steps=2, batch=8, out=str(out), progress=False, eval_n=16, eval_k=2,
                                    samples=32, prior_steps=2))
    assert s["steps"] == 2 + s["prior_steps"]
    ev = eval_run(str(out), 2, 16)
    finite = [v for k, v in ev.items() if isinstance(v, float)]
    assert finite and all(np.isfinite(finite)), ev
    assert set(ev) - {"step"} <= set(s) | {"step"}  # eval reports what the summary holds
    path, points = sample_run(str(out), 5, str(tmp_path / "x.npy"))
    x = np.load(path)
    if s.get("given"):  # a conditional model: a row of samples per condition value, figures per value
        assert x.shape[:2] == (len(points), 5) and [label(p) for p in points] == s["given"]
        assert ev["conditions"] and set(ev["conditions"]) <= set(s["given"]), ev  # (values with test points)
    else:
        assert x.shape[0] == 5 and points == [{}]
    assert np.isfinite(x.astype(float)).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == check_file(spec).graph.graph["name"]
    assert (out / "samples.png").stat().st_size > 1000
