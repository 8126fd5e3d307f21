"""The run-time contract: every shipped spec lowers to a GfnModel whose samples have the
data state's shape, whose loss is finite and reaches every learned parameter, whose
state round-trips through safetensors, whose bijections invert with log|det J| equal to
autograd's; kernels against torch.distributions and hand-computed values; likelihoods
against exact enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gfdsl.driver import check_file, check_source
from gfdsl.errors import GfdslError
from gfdsl.compile.lower import lower
from gfdsl.runtime.flows import Bijection
from tests.conftest import SPECS

SMALL = {"ddpm": {"T": 4}, "ddpm_v": {"T": 4}, "ddpm_digits": {"T": 4, "C": 8}, "ddpm_digits_cond": {"T": 4}, "mle_gfn": {"T": 4}, "schrodinger_bridge": {"T": 4}, "realnvp": {"K": 3}, "nsf": {"K": 3}, "flow_matching": {"T": 3}, "transformer_digits": {"W": 16},
         "sampler_gmm": {"T": 4}, "posterior_ddpm": {"T": 4}, "bridge_moons_8gaussians": {"T": 4},
         "maf": {"K": 2}, "autoregressive": {}, "hvae": {}}


def build(spec, seed=0):
    torch.manual_seed(seed)
    c = check_file(spec, SMALL.get(spec.stem, {}))
    return c, lower(c.graph, c.source)


def data_for(c, n=8):
    from pathlib import Path

    from gfdsl.runtime.data import load

    g = c.graph
    tr, _ = load(g.graph["dataset"], g.nodes[g.graph["data"]], Path(c.source.path).parent)
    return tr[:n]


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_lowered_contract(spec, tmp_path):
    c, m = build(spec)
    if not m.conditions:
        return _lowered_contract(spec, c, m, tmp_path)
    with m.given(m.conditions.fixed(m.conditions.grid()[0])):  # one value every row shares
        _lowered_contract(spec, c, m, tmp_path)


def _lowered_contract(spec, c, m, tmp_path):
    G = c.graph.graph
    if G["space"] is not None:
        return _reward_lowered_contract(spec, c, m, tmp_path)
    x = data_for(c) if G["dataset"] is not None else torch.zeros(8, 0)
    # samples look like data
    t = m.sample(5)
    assert t.states[-1].shape == (5, *m.data_shape)
    assert t.log_pf.shape == t.log_pb.shape == (len(m.space.plan.steps), 5)
    # the loss is finite and every learned parameter gets a gradient (ipf: over both
    # phases; a posterior: over both stages, its prior frozen after the first)
    grads = {n: False for n, p in m.named_parameters() if p.requires_grad}
    phases = [0, 6] if any(t["term"] == "ipf" for t in m.spec["objective"]) else [0]
    if m.prior_chain is not None:
        m.objective.prior_steps, phases = 3, [0, 3]
    for step in phases:
        m.objective.total_steps = 2 * 6
        if m.prior_chain is not None and step == 3:
            m.freeze_prior()
        loss, terms = m.loss(x, step=step)
        assert torch.isfinite(loss), (spec.stem, terms)
        m.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in m.named_parameters():
            if p.requires_grad:
                grads[n] |= p.grad is not None and bool(torch.isfinite(p.grad).all())
    assert all(grads.values()), [n for n, v in grads.items() if not v]
    if G["dataset"] is None or G["source_data"] is not None:
        return  # no likelihood without data, or without the source's density
    # log-likelihood is finite
    assert torch.isfinite(m.log_likelihood(x[:4], k=3)).all()
    # state round-trips through safetensors (shared nets de-duplicated)
    from safetensors.torch import load_model, save_model

    save_model(m, str(tmp_path / "m.safetensors"))
    _, m2 = build(spec, seed=1)
    load_model(m2, str(tmp_path / "m.safetensors"))
    for (n1, p1), (n2, p2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.stem in ("realnvp", "maf", "nsf")], ids=lambda s: s.stem)
def test_bijections_invert_and_logdet_matches_autograd(spec):
    # in float64: a spline moved this far off the identity has bins of slope ~100, where
    # float32's inverse is good to 1e-4 only
    c, m = build(spec)
    m = m.double()
    torch.manual_seed(0)
    for p in m.parameters():  # move away from the identity initialisation
        p.data.add_(0.3 * torch.randn_like(p))
    for s in m.space.plan.steps:
        k = m.space.kernels[s.fwd]
        assert isinstance(k, Bijection)
        x = torch.randn(6, 2, dtype=torch.float64)
        i = torch.full((6,), s.pos)
        y, ld = k.forward_map(x, i)
        x2, ld_inv = k.inverse_map(y, i)
        assert torch.allclose(x, x2, atol=1e-5)
        assert torch.allclose(ld, -ld_inv, atol=1e-5)
        for r in range(6):
            J = torch.autograd.functional.jacobian(lambda v: k.forward_map(v[None], i[:1])[0][0], x[r])
            assert torch.allclose(ld[r], torch.linalg.slogdet(J)[1], atol=1e-4)


def test_flow_likelihood_is_change_of_variables():
    """log p(x) of the flow = log N(f^-1(x)) + sum of inverse log-dets, computed by hand."""
    c, m = build([s for s in SPECS if s.stem == "realnvp"][0])
    for p in m.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    x = torch.randn(5, 2)
    h, total = x, torch.zeros(5)
    for s in reversed(m.space.plan.steps):
        h, ld = m.space.kernels[s.fwd].inverse_map(h, torch.full((5,), s.pos))
        total = total + ld
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(h).sum(1) + total
    assert torch.allclose(m.log_likelihood(x), expected, atol=1e-5)


def test_ddpm_kernels_match_torch_distributions_and_hand_values():
    c, m = build([s for s in SPECS if s.stem == "ddpm"][0])
    bk = m.space.kernels["step1:backward"]
    fk = m.space.kernels["step1:forward"]
    s = bk.s
    b = torch.linspace(1e-4, 0.02, 4, dtype=torch.float64)
    assert torch.allclose(s.abar.double(), torch.cumprod(1 - b, 0), atol=1e-7)
    assert math.isclose(float(s.beta_tilde[1]), float(b[1] * (1 - (1 - b[0])) / (1 - (1 - b[0]) * (1 - b[1]))),
                        rel_tol=1e-5)
    x = torch.randn(7, 2)
    y = torch.randn(7, 2)
    i = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    ref = torch.distributions.MultivariateNormal((1 - b[i]).sqrt().float()[:, None] * x,
                                                 torch.diag_embed(b[i].float()[:, None].expand(7, 2)))
    assert torch.allclose(bk.dist(x, i).log_prob(y), ref.log_prob(y), atol=1e-4)
    eps = fk.outputs(y, i)[0]
    mu = (y - b[i].float()[:, None] / (1 - s.abar[i])[:, None].sqrt() * eps) / (1 - b[i].float())[:, None].sqrt()
    ref = torch.distributions.Normal(mu, b[i].float().sqrt()[:, None])
    assert torch.allclose(fk.dist(y, i).log_prob(x), ref.log_prob(x).sum(1), rtol=1e-4, atol=1e-3)


def test_gaussian_and_bernoulli_kernels_match_torch():
    c, m = build([s for s in SPECS if s.stem == "hvae"][0])
    g = m.space.kernels["step1:forward"]  # gaussian(net = dec2): p(z1 | z2)
    z2 = torch.randn(3, 16)
    z1 = torch.randn(3, 32)
    out = g.net(z2)
    mu, lv = out.chunk(2, 1)
    ref = torch.distributions.Normal(mu, (0.5 * lv).exp()).log_prob(z1).sum(1)
    assert torch.allclose(g.dist(z2, torch.zeros(3, dtype=torch.long)).log_prob(z1), ref, atol=1e-5)
    bern = m.space.kernels["step2:forward"]
    x = torch.randint(0, 2, (3, 64)).float()
    ref = torch.distributions.Bernoulli(logits=bern.net(z1)).log_prob(x).sum(1)
    assert torch.allclose(bern.dist(z1, torch.zeros(3, dtype=torch.long)).log_prob(x), ref, atol=1e-5)


TINY_AR = """
model tiny_ar {
  state x[i in 0..3] : binary[i]
  source x[0]
  data x[3]
  net ar = made(in = 3, hidden = [8], out_per_dim = 2)
  step x[i - 1] -> x[i] for i in 1..3 {
    forward  = next_token(net = ar)
    backward = truncate()
  }
  dataset = file(path = "bits.npy")
  objective = mle
}
"""

TINY_LATENT = """
model tiny_latent {
  state z : binary[2]
  state x : binary[3]
  source z ~ bernoulli(p = 0.3)
  data x
  net dec = mlp(in = 2, out = 3, hidden = [8])
  net enc = mlp(in = 3, out = 2, hidden = [8])
  step z -> x {
    forward  = bernoulli(net = dec)
    backward = bernoulli(net = enc)
  }
  dataset = file(path = "bits.npy")
  objective = elbo(train = "both")
}
"""


def random_model(text: str):
    """Lower a spec given as text, its parameters moved well away from initialisation."""
    torch.manual_seed(0)
    c = check_source(text)
    m = lower(c.graph, c.source)
    for p in m.parameters():
        p.data.add_(torch.randn_like(p))
    return m


def test_autoregressive_likelihood_is_exact_and_normalised():
    m = random_model(TINY_AR)
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    ll = m.log_likelihood(xs, k=10)  # exact: k is ignored
    assert m.exact
    assert math.isclose(float(ll.exp().sum()), 1.0, rel_tol=1e-5)
    # the one-call path (MADE) equals the step-by-step path
    k = m.space.kernels["step1:forward"]
    k.all_positions = False
    assert torch.allclose(m.log_likelihood(xs), ll, atol=1e-6)


def test_latent_likelihood_matches_enumeration():
    torch.manual_seed(0)
    c = check_source(TINY_LATENT)
    m = lower(c.graph, c.source)
    for p in m.space.kernels["step1:forward"].parameters():  # a random decoder p(x | z)
        p.data.add_(torch.randn_like(p))
    enc = m.space.kernels["step1:backward"].net.body[-1]  # a uniform encoder q(z | x): low-variance weights
    torch.nn.init.zeros_(enc.weight)
    torch.nn.init.zeros_(enc.bias)
    zs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    prior = torch.distributions.Bernoulli(probs=torch.full((2,), 0.3)).log_prob(zs).sum(1)  # (4,)
    dec = m.space.kernels["step1:forward"]
    with torch.no_grad():
        exact = torch.stack([torch.logsumexp(prior + dec.dist(zs, torch.zeros(4, dtype=torch.long)).log_prob(
            x.expand(4, 3)), 0) for x in xs])
    assert math.isclose(float(exact.exp().sum()), 1.0, rel_tol=1e-5)
    torch.manual_seed(1)
    est = m.log_likelihood(xs, k=4000)
    assert torch.allclose(est, exact, atol=0.03), (est, exact)


def test_lowering_error_has_a_position(tmp_path, capsys, in_root):
    from gfdsl.cli.app import main

    spec = tmp_path / "simple.gfn"  # L_simple on a structure without a denoiser: found only at lowering
    spec.write_text((in_root / "specs" / "hvae.gfn").read_text()
                    .replace('elbo(train = "both")', 'elbo(train = "both", weighting = "simple")'))
    with pytest.raises(GfdslError) as e:
        c = check_file(spec)
        lower(c.graph, c.source)
    d = e.value.diagnostics[0]
    assert d.code == "E802" and d.span is not None and d.span.line > 1
    assert main(["run", str(spec), "--steps", "1", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:{d.span.line}:{d.span.col}: error[E802]" in err and "Traceback" not in err


def test_python_api(tmp_path):
    import gfdsl

    m = gfdsl.compile_spec([s for s in SPECS if s.stem == "ddpm"][0], {"T": 3})
    x = torch.randn(4, 2)
    loss, terms = m.loss(x)
    assert torch.isfinite(loss) and set(terms) == {"elbo"}
    t = m.sample(2)
    assert t.log_pf.shape == (3, 2) and len(t.states) == 4
    assert m.log_likelihood(x, k=2).shape == (4,)
    s = gfdsl.train(str([s for s in SPECS if s.stem == "hvae"][0]),
                    gfdsl.RunOptions(steps=2, batch=4, out=str(tmp_path / "r"), eval_k=2, eval_n=3, progress=False))
    assert s["steps"] == 2 and "test_bpd" in s and s["nll_estimator"] == {"name": "iwae", "k": 2}


def test_reward_terms_against_hand_values():
    from gfdsl.engine.objectives import reverse_kl, trajectory_balance
    from gfdsl.engine.trajectory import Trajectory

    t = Trajectory(states=[], log_pf=torch.tensor([[-1.0, -2.0], [-0.5, -0.25]]),
                   log_pb=torch.tensor([[-0.2, -0.1], [0.0, -0.3]]), log_prior=torch.tensor([-1.0, -1.5]))
    # log weights: b0: -1 - 1.5 + 0.2 = -2.3 ; b1: -1.5 - 2.25 + 0.4 = -3.35
    w = torch.tensor([-2.3, -3.35])
    assert torch.allclose(t.log_weight(), w)
    log_r = torch.tensor([-2.0, -3.0])
    log_Z = torch.tensor(0.5)
    expected = ((0.5 - 2.3 + 2.0) ** 2 + (0.5 - 3.35 + 3.0) ** 2) / 2
    assert math.isclose(float(trajectory_balance(t, log_Z, log_r)), expected, rel_tol=1e-6)
    assert math.isclose(float(reverse_kl(t, log_r)), ((-2.3 + 2.0) + (-3.35 + 3.0)) / 2, rel_tol=1e-6)


def test_prior_log_prob_matches_torch():
    from gfdsl.runtime.kernels import Prior

    p = Prior("normal", {"mean": 0.5, "std": 2.0}, 3, "real", 2)
    x = torch.randn(4, 3)
    ref = torch.distributions.Normal(0.5, 2.0).log_prob(x).sum(1)
    assert torch.allclose(p.log_prob(x), ref, atol=1e-6)
    assert torch.allclose(p.log_prob(x), p.dist(4).log_prob(x), atol=1e-6)


def _reward_lowered_contract(spec, c, m, tmp_path):
    """Samples are states of the space; the loss is finite and trains every parameter;
    the exact terminating distribution is a distribution; parameters round-trip."""
    t = m.sample(5)
    sp = m.space.space
    assert t.states.dtype == torch.long and t.states.shape[1:] == (5, sp.n)
    assert ((t.actions == sp.M).sum(0) == 1).all()  # every trajectory exits once
    loss, terms = m.loss(torch.zeros(8, 0))
    assert torch.isfinite(loss), terms
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    ev = m.exact_distribution()
    assert abs(ev["mass"] - 1) < 1e-6 and 0 <= ev["exact_l1"] <= 2
    from safetensors.torch import load_model, save_model

    save_model(m, str(tmp_path / "m.safetensors"))
    _, m2 = build(spec, seed=1)
    load_model(m2, str(tmp_path / "m.safetensors"))
    for (n1, p1), (n2, p2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_discretised_decoder_is_a_normalised_probability_and_matches_hand_values():
    """Ho et al. (2020) eq. 13: each of the L values gets the Gaussian's mass on its bin,
    the outer bins reaching to -inf / +inf; so the L probabilities of one pixel sum to 1."""
    from gfdsl.runtime.kernels import DiscretizedNormal

    L = 17
    grid = torch.linspace(-1, 1, L, dtype=torch.float64)
    h = 1 / (L - 1)
    for mu, sd in [(-1.3, 0.05), (0.01, 0.3), (0.4, 0.01), (2.0, 1.0)]:
        N1 = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), sd)
        d = DiscretizedNormal(torch.full((L, 1), mu, dtype=torch.float64), torch.full((L, 1), sd, dtype=torch.float64),
                              torch.ones(L, dtype=torch.bool), L)
        p = d.log_prob(grid[:, None]).exp()  # (L,): one pixel at each grid value
        hand = [(1.0 if k == L - 1 else float(N1.cdf(v + h))) - (0.0 if k == 0 else float(N1.cdf(v - h)))
                for k, v in enumerate(grid)]
        assert torch.allclose(p, torch.tensor(hand, dtype=torch.float64), rtol=1e-6, atol=1e-12)
        assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-9)
    mu = torch.tensor([[-1.3, 0.01, 0.4, 2.0]], dtype=torch.float64)
    sd = torch.tensor([[0.05, 0.3, 0.01, 1.0]], dtype=torch.float64)
    N = torch.distributions.Normal(mu, sd)
    # pixels are independent given the mean: a row's log-probability is the sum over pixels
    x = grid[[0, 8, 11, 16]][None]
    one = [DiscretizedNormal(mu[:, j:j + 1], sd[:, j:j + 1], torch.tensor([True]), L).log_prob(x[:, j:j + 1])
           for j in range(4)]
    assert torch.allclose(DiscretizedNormal(mu, sd, torch.tensor([True]), L).log_prob(x), sum(one))
    # samples land on the grid with the bins' frequencies
    torch.manual_seed(0)
    d = DiscretizedNormal(torch.full((20000, 1), 0.01, dtype=torch.float64),
                          torch.full((20000, 1), 0.3, dtype=torch.float64), torch.ones(20000, dtype=torch.bool), L)
    y = d.sample()
    freq = torch.stack([(y[:, 0] - v).abs().lt(1e-9).double().mean() for v in grid])
    p = DiscretizedNormal(torch.full((L, 1), 0.01, dtype=torch.float64), torch.full((L, 1), 0.3, dtype=torch.float64),
                          torch.ones(L, dtype=torch.bool), L).log_prob(grid[:, None]).exp()
    assert math.isclose(float(freq.sum()), 1.0) and torch.allclose(freq, p, atol=0.01)
    # rows not marked discrete are the plain Gaussian density
    x = torch.randn(1, 4, dtype=torch.float64)
    g = DiscretizedNormal(mu, sd, torch.tensor([False]), L).log_prob(x)
    assert torch.allclose(g, N.log_prob(x).sum(1))
    # far tails stay finite (log_ndtr, no cancellation) and give finite gradients
    m = torch.tensor([[30.0, -30.0]], dtype=torch.float64, requires_grad=True)
    lp = DiscretizedNormal(m, torch.full((1, 2), 0.01, dtype=torch.float64), torch.tensor([True]), L).log_prob(
        torch.tensor([[0.0, 0.5]], dtype=torch.float64))
    lp.backward()
    assert torch.isfinite(lp).all() and torch.isfinite(m.grad).all() and float(lp.detach()) < -1e5


def test_digits_ddpm_decodes_onto_the_grid_and_reports_bits_per_dim(tmp_path):
    c, m = build([s for s in SPECS if s.stem == "ddpm_digits"][0])
    fk = m.space.kernels["step1:forward"]
    assert fk.levels == 17 and fk.decode_pos == 0  # x[1] -> x[0] is position 0
    torch.manual_seed(0)
    x0 = m.sample(5).states[-1]
    k = (x0 + 1) * 8
    assert torch.allclose(k, k.round(), atol=1e-5) and float(x0.min()) >= -1 and float(x0.max()) <= 1
    y = torch.randn(3, 64)
    i = torch.tensor([0, 1, 3])
    from gfdsl.runtime.kernels import DiscretizedNormal

    d = fk.dist(y, i)
    assert isinstance(d, DiscretizedNormal) and d.disc.tolist() == [True, False, False]
    # on the data step the log-likelihood is a log probability: never above 0
    x = torch.randint(0, 17, (4, 64)).float() / 8 - 1
    assert (m.log_likelihood(x, k=2) <= 0).all()


def test_discretised_decoder_mistakes_are_diagnostics(tmp_path, in_root, capsys):
    import re

    src = (in_root / "specs" / "ddpm_digits.gfn").read_text()
    # the shipped spec with a small mlp for its U-Net, so that the state size can change
    src = re.sub(r"net v = unet\([^)]*\)", "net v = mlp(in = D, out = 2 * D, hidden = [32], time_embed = 16)", src)
    assert "net v = mlp" in src
    # data off the 17-level grid: refused before training, with the kernel's position
    spec = tmp_path / "toy.gfn"
    spec.write_text(src.replace("digits(binarize = false)", 'toy2d(name = "moons")').replace("D = 64", "D = 2"))
    from gfdsl.cli.app import main

    assert main(["run", str(spec), "--steps", "1", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "error[E802]: ddpm_denoiser(levels = 17) needs data on 17 evenly spaced values" in err
    assert f"{spec}:" in err and "Traceback" not in err
    # a discretising kernel on steps that never reach the data state
    two = src.replace("for t in 1..T", "for t in 2..T").replace(
        "  dataset =", "  step x[1] -> x[0] {\n    forward  = ddpm_denoiser(net = v, schedule = beta1, param = \"v\", "
        "variance = \"learned\")\n"
        "    backward = ddpm_noising(schedule = beta1)\n  }\n  schedule beta1 = linear(steps = 1)\n\n  dataset =")
    two = two.replace("steps = T)", "steps = T - 1)")
    with pytest.raises(GfdslError) as e:
        c = check_source(two)
        lower(c.graph, c.source)
    d = e.value.diagnostics[0]
    assert d.code == "E802" and d.span is not None and "no step using it ends there" in d.render()


@pytest.mark.parametrize("act", ["relu", "silu", "gelu", "tanh", "elu"])
@pytest.mark.parametrize("hidden", [[], [7], [16, 16]])
def test_mlp_replay_has_the_values_and_gradients_of_forward(act, hidden):
    """MLP.forward_keep + replay (a rollout's forward pass, differentiated later without
    recomputing it) give forward()'s values and autograd's parameter gradients."""
    from gfdsl.runtime.nets import MLP

    torch.manual_seed(0)
    net = MLP(5, 3, hidden, act)
    x, w = torch.randn(9, 5), torch.randn(9, 3)
    (net(x) * w).sum().backward()
    want = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with torch.no_grad():
        out, keep = net.forward_keep(x)
    y = net.replay(out, x, keep)
    assert torch.equal(y, net(x).detach())
    assert y.requires_grad and not out.requires_grad
    (y * w).sum().backward()
    for p, g in zip(net.parameters(), want):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("act", ["relu", "silu"])
def test_mlp_first_layer_from_a_table_of_hot_columns(act):
    """The first layer read from gather_table(n) (the sum of the rows of a one-hot input's
    n hot columns), then forward_keep(first=...), is forward(x) up to float rounding, and
    replays to the same gradients."""
    from gfdsl.runtime.nets import MLP

    torch.manual_seed(0)
    net = MLP(12, 4, [16, 16], act)
    h = torch.stack([torch.randint(0, 4, (10,)) + 4 * i for i in range(3)], 1)  # 3 blocks of 4
    x = torch.zeros(10, 12).scatter_(1, h, 1.0)
    w = torch.randn(10, 4)
    (net(x) * w).sum().backward()
    want = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with torch.no_grad():
        first = torch.nn.functional.embedding_bag(h, net.gather_table(3), mode="sum")
        out, keep = net.forward_keep(first=first)
    assert torch.allclose(out, net(x).detach(), atol=1e-6)
    (net.replay(out, x, keep) * w).sum().backward()
    for p, g in zip(net.parameters(), want):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)
