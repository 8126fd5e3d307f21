"""The IR and its renderings: golden IR dumps (small dims) and DOT text for every
shipped spec, plus structural facts checked directly on the networkx graph."""

from __future__ import annotations

import networkx as nx
import pytest

from gfdsl import ir

from gfdsl.lang import ast

from gfdsl.ir import render
from gfdsl.driver import check_file
from gfdsl.lang.parse import parse
from gfdsl.files import read_source
from tests.conftest import SPECS

# small dims keep the golden dumps short; the autoregressive spec's length is fixed by
# its data set (64 binarised pixels), so it is dumped whole
SMALL = {"ddpm": {"T": 3}, "ddpm_digits": {"T": 3, "C": 8}, "mle_gfn": {"T": 3}, "schrodinger_bridge": {"T": 3}, "realnvp": {"K": 3},
         "maf": {"K": 2}, "autoregressive": {}, "hvae": {}, "hypergrid": {"D": 3, "H": 4}, "bitseq": {"L": 4},
         "sampler_gmm": {"T": 3}, "sampler_gmm25": {"T": 3}, "sampler_funnel": {"T": 3}, "sampler_manywell": {"T": 3},
         "posterior_ddpm": {"T": 3}, "bridge_moons_8gaussians": {"T": 3}, "ddpm_digits_cond": {"T": 3},
         "hypergrid_cond": {"H": 4}, "ddpm_v": {"T": 3}, "nsf": {"K": 2}, "flow_matching": {"T": 3}, "transformer_digits": {"W": 16}}


def test_every_spec_has_small_dims():
    assert {s.stem for s in SPECS} <= set(SMALL)


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_ir_dump_golden(spec, golden):
    g = check_file(spec, SMALL.get(spec.stem, {})).graph
    text = ir.dump(g)
    assert text == ir.dump(check_file(spec, SMALL.get(spec.stem, {})).graph)  # deterministic
    golden(f"ir/{spec.stem}.txt", text)


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_dot_golden(spec, golden):
    g = check_file(spec).graph
    golden(f"dot/{spec.stem}.dot", render.dot_source(g))


def test_ast_dump_golden(golden):
    m = parse(read_source(SPECS[[s.stem for s in SPECS].index("ddpm")]))
    golden("ast/ddpm.txt", ast.dump(m))


def test_ir_is_plain_data():
    """No torch objects or callables anywhere in the graph: the IR is data."""
    for spec in SPECS:
        g = check_file(spec).graph
        for v in _walk([g.graph, *[d for _, d in g.nodes(data=True)], *[d for *_, d in g.edges(data=True)]]):
            assert isinstance(v, (str, int, float, bool, type(None))), (spec.stem, type(v))


def _walk(x):
    if isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from _walk(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _walk(v)
    else:
        yield x


def test_ddpm_graph_shape():
    g = check_file(SPECS[[s.stem for s in SPECS].index("ddpm")], {"T": 5}).graph
    assert nx.is_directed_acyclic_graph(g)
    assert g.number_of_nodes() == 6 and g.number_of_edges() == 5
    assert g.graph["source"] == "x[5]" and g.graph["data"] == "x[0]"
    assert nx.shortest_path(g, "x[5]", "x[0]") == [f"x[{i}]" for i in range(5, -1, -1)]
    e = g.edges["x[3]", "x[2]"]
    assert e["binding"] == {"t": 3} and e["forward"] == "step1.forward" and e["backward"] == "step1.backward"
    assert g.nodes["x[5]"]["role"] == "source" and g.nodes["x[5]"]["prior"] == "prior"
    assert g.nodes["x[0]"]["shape"] == [2] and g.nodes["x[0]"]["dtype"] == "real"
    k = g.graph["kernels"]
    assert k["step1.forward"]["learned"] and not k["step1.backward"]["learned"]
    assert "closed_form_marginal" in k["step1.backward"]["caps"]


def test_per_index_kernels_and_inverse():
    """A kernel whose arguments use the step index is one kernel per index value."""
    g = check_file(SPECS[[s.stem for s in SPECS].index("realnvp")], {"K": 4}).graph
    ks = g.graph["kernels"]
    fwd = sorted(k for k in ks if k.startswith("step1.forward"))
    assert fwd == [f"step1.forward[k={i}]" for i in range(1, 5)]
    assert [ks[k]["args"]["parity"] for k in fwd] == [1, 0, 1, 0]
    assert [ks[k]["args"]["net"] for k in fwd] == ["st[1]", "st[2]", "st[3]", "st[4]"]
    assert ks["inv:step1.forward[k=2]"]["inverse_of"] == "step1.forward[k=2]"
    assert sorted(g.graph["nets"]) == ["st[1]", "st[2]", "st[3]", "st[4]"]


def test_prefix_states_grow():
    g = check_file(SPECS[[s.stem for s in SPECS].index("autoregressive")]).graph
    assert g.nodes["x[0]"]["shape"] == [0] and g.nodes["x[64]"]["shape"] == [64]
    assert g.nodes["x[0]"]["prior"] is None


def test_context_edges(tmp_path):
    spec = tmp_path / "ladder.gfn"
    spec.write_text("""
model ladder {
  state z2 : real[4]
  state z1 : real[4]
  state x : binary[8]
  source z2 ~ normal()
  data x
  net d2 = mlp(in = 4, out = 8)
  net d1 = mlp(in = 8, out = 8)
  net e1 = mlp(in = 8, out = 8)
  net e2 = mlp(in = 4, out = 8)
  step z2 -> z1 { forward = gaussian(net = d2)  backward = gaussian(net = e2) }
  step z1 -> x given z2 { forward = bernoulli(net = d1)  backward = gaussian(net = e1) }
  dataset = file(path = "bits.npy")
  objective = elbo(train = "both")
}
""")
    import numpy as np

    np.save(tmp_path / "bits.npy", np.zeros((4, 8), np.float32))  # check_file reads the data file's header
    g = check_file(spec).graph
    assert g.edges["z2", "x"]["kind"] == "context"
    assert ir.steps_view(g).number_of_edges() == 2
    assert "context" in render.dot_source(g)


def test_objective_is_flattened_with_coefficients():
    g = check_file(SPECS[[s.stem for s in SPECS].index("mle_gfn")]).graph
    terms = [(t["coef"], t["term"]) for t in g.graph["objective"]]
    assert terms == [(1.0, "elbo"), (0.25, "tbc")]


def test_folding_threshold():
    g = check_file(SPECS[[s.stem for s in SPECS].index("ddpm")], {"T": 4}).graph
    folded = render.graph_spec(g, unroll=3)
    assert len(folded["plates"]) == 1 and {n["id"] for n in folded["nodes"]} == {"x[0]", "x[4]"}
    flat = render.graph_spec(g, unroll=4)
    assert not flat["plates"] and len(flat["nodes"]) == 5
    # forward solid, backward dashed, one pair per step
    styles = sorted(e["attrs"]["style"] for e in flat["edges"])
    assert styles == ["dashed"] * 4 + ["solid"] * 4
