"""Spline and linear flow layers (runtime/flows.py): the rational-quadratic spline against
its definition (Durkan et al. 2019) and hand-computed values, invertibility and log|det J|
against autograd's Jacobian for spline couplings, autoregressive splines and LU linear
maps in D = 3, the likelihood of a chain of them by change of variables, and the
checker's rules for them."""

from __future__ import annotations

import math

import pytest
import torch

from gfdsl.compile.lower import lower
from gfdsl.driver import check_source
from gfdsl.errors import GfdslError
from gfdsl.runtime.flows import LULinear, rq_spline

K = 5


def _params(B, D, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3 * K - 1, D, generator=g, dtype=torch.float64) * scale


def test_zero_parameters_are_the_identity():
    x = torch.linspace(-7, 7, 101, dtype=torch.float64)[:, None]
    y, ld = rq_spline(x, torch.zeros(101, 3 * K - 1, 1, dtype=torch.float64), False, K, 5.0)
    assert torch.allclose(y, x, atol=1e-12) and torch.allclose(ld, torch.zeros_like(ld), atol=1e-12)


def test_spline_is_monotone_continuous_and_fixes_the_ends_and_tails():
    p = _params(1, 1, 1.5).expand(2001, -1, -1)
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)[:, None]
    y, ld = rq_spline(x, p, False, K, 5.0)
    assert bool((y[1:] > y[:-1]).all())  # strictly increasing
    # continuous, with a continuous slope, at every interior knot: approached from both sides
    from gfdsl.runtime.flows import _knots

    knots = _knots(p[:1, :K].transpose(1, 2), 5.0)[0][0, 0, 1:-1]
    for side in (-1e-9, 1e-9):
        y_k, ld_k = rq_spline((knots + side)[:, None], p[:K - 1], False, K, 5.0)
        if side < 0:
            left = (y_k, ld_k)
    assert torch.allclose(left[0], y_k, atol=1e-6) and torch.allclose(left[1], ld_k, atol=1e-5)
    out = x.abs() >= 5
    assert torch.equal(y[out], x[out]) and bool((ld[out] == 0).all())
    ends = torch.tensor([[-5.0], [5.0]], dtype=torch.float64)
    assert torch.allclose(rq_spline(ends, p[:2], False, K, 5.0)[0], ends)


def test_spline_matches_the_formula_in_one_bin_by_hand():
    """Two bins on [-1, 1]: knots at -1, 0, 1 in x and y when the widths and heights are
    equal, slope 1 at -1 and d at 0; in the first bin xi = x + 1, s = 1, so (eq. 4)
    y = -1 + (xi^2 + xi (1 - xi)) / (1 + (d - 1) xi (1 - xi))."""
    d = 2.0
    from gfdsl.runtime.flows import MIN_SLOPE, SLOPE_SHIFT

    u = math.log(math.expm1(d - MIN_SLOPE)) - SLOPE_SHIFT  # softplus(u + shift) + min = d
    p = torch.tensor([[0.0], [0.0], [0.0], [0.0], [u]], dtype=torch.float64)[None]  # (1, 3 * 2 - 1, 1)
    for x in (-0.75, -0.5, -0.1):
        xi = x + 1
        q = xi * (1 - xi)
        want = -1 + (xi ** 2 + q) / (1 + (d - 1) * q)
        slope = (d * xi ** 2 + 2 * q + (1 - xi) ** 2) / (1 + (d - 1) * q) ** 2
        y, ld = rq_spline(torch.tensor([[x]], dtype=torch.float64), p, False, 2, 1.0)
        assert y.item() == pytest.approx(want, abs=1e-12)
        assert ld.item() == pytest.approx(math.log(slope), abs=1e-12)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_spline_inverse_and_log_slope_match_autograd(scale):
    B, D = 200, 3
    p = _params(B, D, scale)
    x = torch.randn(B, D, dtype=torch.float64) * 3
    y, ld = rq_spline(x, p, False, K, 5.0)
    x2, ld2 = rq_spline(y, p, True, K, 5.0)
    assert torch.allclose(x2, x, atol=1e-9) and torch.allclose(ld2, -ld, atol=1e-9)
    xx = x.clone().requires_grad_()
    slope = torch.autograd.grad(rq_spline(xx, p, False, K, 5.0)[0].sum(), xx)[0]
    assert torch.allclose(slope.log(), ld, atol=1e-9)


FLOW3 = """model f3 {{
  dims {{
    L = 2
    D = 3
  }}
  state h[k in 0..{n}] : real[D]
  source h[0] ~ normal()
  data h[{n}]
  net c[k in 1..L] = mlp(in = D, out = 14 * D, hidden = [16])
  net a[k in 1..L] = made(in = D, hidden = [16, 16], out_per_dim = 14)
  net w[k in 1..L] = lu(in = D)
  step h[k - 1] -> h[k] for k in 1..L {{
    forward  = spline_coupling(net = c[k], parity = k % 2, bins = 5, bound = 3)
    backward = inverse(forward)
  }}
  step h[k - 1] -> h[k] for k in {l1}..{l2} {{
    forward  = lu_linear(net = w[k - {off2}])
    backward = inverse(forward)
  }}
  step h[k - 1] -> h[k] for k in {a1}..{n} {{
    forward  = spline_autoregressive(net = a[k - {off}], order = k % 2, bins = 5, bound = 3)
    backward = inverse(forward)
  }}
  dataset = file(path = "x3.npy")
  objective = mle
}}
"""


def _flow3():
    """2 spline couplings, 2 LU maps, 2 autoregressive splines in D = 3; the data state
    is 3-D, so the model is built, never trained on the 2-D toy set."""
    text = FLOW3.format(n=6, l1=3, l2=4, a1=5, off=4, off2=2)
    c = check_source(text, path="f3.gfn")
    torch.manual_seed(0)
    m = lower(c.graph, c.source)
    for p in m.parameters():  # move away from the identity initialisation
        p.data.add_(0.3 * torch.randn_like(p))
    return m


def test_spline_and_lu_layers_invert_with_autograd_log_det_in_3d():
    m = _flow3()
    kinds = set()
    for s in m.space.plan.steps:
        k = m.space.kernels[s.fwd].double()
        kinds.add(type(k).__name__)
        x = torch.randn(5, 3, dtype=torch.float64)
        i = torch.full((5,), s.pos)
        y, ld = k.forward_map(x, i)
        x2, ld_inv = k.inverse_map(y, i)
        assert torch.allclose(x, x2, atol=1e-8) and torch.allclose(ld, -ld_inv, atol=1e-8)
        for r in range(5):
            J = torch.autograd.functional.jacobian(lambda v: k.forward_map(v[None], i[:1])[0][0], x[r])
            assert torch.allclose(ld[r], torch.linalg.slogdet(J)[1], atol=1e-8)
    assert kinds == {"Coupling", "LULinear", "Autoregressive"}


def test_chain_likelihood_of_spline_layers_is_normalised():
    """Exact likelihood: samples scored by the model equal log N(z) - sum of forward
    log-dets of the trajectory that made them."""
    m = _flow3().double()
    z = torch.randn(64, 3, dtype=torch.float64)
    h, total = z, torch.zeros(64, dtype=torch.float64)
    for s in m.space.plan.steps:
        h, ld = m.space.kernels[s.fwd].forward_map(h, torch.full((64,), s.pos))
        total = total + ld
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1) - total
    assert torch.allclose(m.log_likelihood(h), want, atol=1e-8)


def test_nsf_density_integrates_to_one():
    """The shipped NSF's density, moved off the identity, sums to 1 over a fine grid."""
    from pathlib import Path

    from gfdsl.driver import check_file

    c = check_file(Path(__file__).parent.parent / "specs" / "nsf.gfn", {"K": 2})
    torch.manual_seed(0)
    m = lower(c.graph, c.source).double()
    for p in m.parameters():
        p.data.add_(0.1 * torch.randn_like(p))  # larger moves make spikes finer than this grid
    g = torch.linspace(-9, 9, 721, dtype=torch.float64)
    xy = torch.cartesian_prod(g, g)
    mass = m.log_likelihood(xy).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_lu_linear_is_its_weight_matrix():
    from gfdsl.runtime.nets import LU

    torch.manual_seed(1)
    f = LULinear(LU(4))
    with torch.no_grad():
        for p in f.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(7, 4)
    y, ld = f.forward_map(x, None)
    W = f.net.weight()
    assert torch.allclose(y, x @ W.T + f.net.b, atol=1e-5)
    assert torch.allclose(ld, torch.linalg.slogdet(W)[1].expand(7), atol=1e-5)


@pytest.mark.parametrize("old, new, where, code, words", [
    ("out = 14 * D,", "out = 5 * D,", "13:38", "E402", "outputs 15 values, but spline_coupling() for the 5 widths"),
    ("made(in = D, hidden = [16, 16], out_per_dim = 14)", "mlp(in = D, out = 14 * D, hidden = [16])", "21:44",
     "E607", "spline_autoregressive() needs a made() net"),
    ("out_per_dim = 14", "out_per_dim = 2", "21:44", "E402", "needs 42"),
    ("parity = k % 2, bins = 5", "parity = k % 2, bins = 1", "13:67", "E303", "'bins' in spline_coupling()"),
    ("parity = k % 2, bins = 5, bound = 3", "parity = k % 2, bins = 5, bound = -1", "13:78", "E303", "'bound'"),
    ("state h[k in 0..6] : real[D]", "state h[k in 0..6] : cat(3)[D]", "17:16", "E403", "lu_linear() needs a real h[3]"),
    ("w[k in 1..L] = lu(in = D)", "w[k in 1..L] = mlp(in = D, out = D)", "17:32", "E607", "lu_linear() needs an lu() net"),
    ("w[k in 1..L] = lu(in = D)", "w[k in 1..L] = lu(in = 2)", "17:32", "E402", "net 'w[1]' takes 2 values"),
])
def test_spline_mistakes_are_diagnostics(old, new, where, code, words):
    text = FLOW3.format(n=6, l1=3, l2=4, a1=5, off=4, off2=2)
    assert old in text
    with pytest.raises(GfdslError) as e:
        check_source(text.replace(old, new), path="f3.gfn")
    msg = str(e.value)
    assert f"f3.gfn:{where}: error[{code}]" in msg and words in msg


def test_the_resource_estimate_counts_the_flow_parameters():
    from gfdsl.compile.cost import estimate

    c = check_source(FLOW3.format(n=6, l1=3, l2=4, a1=5, off=4, off2=2), path="f3.gfn")
    m = lower(c.graph, c.source)
    assert estimate(c.graph, 16).parameters == sum(p.numel() for p in m.parameters())
