"""Diffusion samplers from an energy: the benchmark energies against their definitions
(log Z by quadrature against Monte Carlo, the exact samplers against moments), MALA's
detailed balance, rank-prioritised replay's law, the objectives on a hand-computed
continuous trajectory (tb, vargrad, db, forward-looking db), the PIS net and the shared
step embedding against their plain forms, the learned variance, the metrics' ordering
ELBO <= log Z <= EUBO, and the bad inputs of samplers."""

from __future__ import annotations

import math

import pytest
import torch

from gfdsl.compile.lower import lower
from gfdsl.driver import check_source
from gfdsl.engine import localsearch, objectives
from gfdsl.engine.offpolicy import Replay
from gfdsl.engine.trajectory import Trajectory
from gfdsl.errors import GfdslError
from gfdsl.runtime import energies, nets

SPEC = """
model s {
  dims { T = %(T)s  D = %(D)s }
  state x[t in 0..T] : real[D]
  source x[0] = 0
  net f = pis(in = D, out = %(out)s, hidden = 16, harmonics = 8)
  %(extra)s
  step x[t - 1] -> x[t] for t in 1..T {
    forward  = controlled_sde(net = f, sigma = %(sigma)s%(kw)s)
    backward = brownian_bridge(sigma = %(sigma)s)
  }
  energy = %(energy)s
  objective = %(objective)s
  train { %(train)s }
}
"""


def spec(T=6, D=2, out="D", sigma="1", kw="", energy="gmm25()", objective="tb", train="", extra=""):
    return SPEC % dict(T=T, D=D, out=out, sigma=sigma, kw=kw, energy=energy, objective=objective, train=train,
                       extra=extra)


def model(text, seed=0):
    torch.manual_seed(seed)
    c = check_source(text)
    return lower(c.graph, c.source)


# -- energies ---------------------------------------------------------------------------------


def test_manywell_log_z_by_quadrature_matches_monte_carlo_and_the_published_value():
    z1 = energies.well_log_z()
    # importance sampling from N(0, 2^2): an independent estimate of the same integral
    g = torch.Generator().manual_seed(0)
    q = 2.0 * torch.randn(4_000_000, generator=g, dtype=torch.float64)
    lw = -(q ** 4 - 6 * q ** 2 + 0.5 * q) + 0.5 * (q / 2) ** 2 + math.log(2) + 0.5 * math.log(2 * math.pi)
    mc = float(torch.logsumexp(lw, 0) - math.log(len(q)))
    assert abs(z1 - mc) < 5e-3
    m = energies.Manywell({"dim": 32})
    assert m.log_z == pytest.approx(164.6957, abs=1e-3)  # Midgley et al. 2023; Sendera et al. 2024


def test_manywell_sampler_matches_the_wells_moments():
    m = energies.Manywell({"dim": 4})
    torch.manual_seed(0)
    x = m.sample(100_000).double()
    grid = torch.linspace(-8, 8, 200_001, dtype=torch.float64)
    p = torch.exp(-(grid ** 4 - 6 * grid ** 2 + 0.5 * grid) - m.log_z1) * (grid[1] - grid[0])
    mean1, second1 = float((p * grid).sum()), float((p * grid ** 2).sum())
    for c in (0, 2):  # first coordinates of the pairs: the well
        assert float(x[:, c].mean()) == pytest.approx(mean1, abs=0.02)
        assert float((x[:, c] ** 2).mean()) == pytest.approx(second1, abs=0.03)
    for c in (1, 3):  # second coordinates: N(0, 1)
        assert abs(float(x[:, c].mean())) < 0.02 and float(x[:, c].var()) == pytest.approx(1.0, abs=0.02)
    assert torch.allclose(m(x[:5].float()), -(x[:5, 0::2] ** 4 - 6 * x[:5, 0::2] ** 2 + 0.5 * x[:5, 0::2]
                                               + 0.5 * x[:5, 1::2] ** 2).sum(1).float(), atol=1e-3)


def test_funnel_against_torch_distributions_and_its_sampler():
    f = energies.Funnel({"dim": 5})
    x = torch.randn(7, 5) * 2
    N = torch.distributions.Normal
    want = N(0, 3).log_prob(x[:, 0]) + N(0, torch.exp(0.5 * x[:, 0])[:, None]).log_prob(x[:, 1:]).sum(1)
    assert torch.allclose(f(x), want, atol=1e-4)
    torch.manual_seed(0)
    s = f.sample(200_000)
    assert float(s[:, 0].std()) == pytest.approx(3.0, abs=0.03)
    # x_1 / exp(x_0 / 2) is standard normal given any x_0
    z = s[:, 1] / torch.exp(0.5 * s[:, 0])
    assert float(z.std()) == pytest.approx(1.0, abs=0.01)


def test_gmm25_is_normalised_and_its_closed_form_score_matches_autograd():
    g = energies.gmm25({"variance": 0.3})
    assert g.mu.shape == (25, 2) and g.log_z == 0.0
    lin = torch.linspace(-14, 14, 1401)
    xx, yy = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    mass = float(g(grid).double().exp().sum() * (lin[1] - lin[0]) ** 2)
    assert mass == pytest.approx(1.0, abs=1e-3)
    x = torch.randn(50, 2) * 6
    auto = super(type(g), g).grad_log_r(x)  # the autograd fallback of Target
    assert torch.allclose(g.grad_log_r(x), auto, atol=1e-4, rtol=1e-4)


# -- MALA and the buffer ------------------------------------------------------------------------


class _StdNormal(torch.nn.Module):
    def forward(self, x):
        return -0.5 * (x ** 2).sum(1)

    def grad_log_r(self, x):
        return -x


def test_mala_acceptance_satisfies_detailed_balance_on_a_gaussian():
    """pi(x) q(y|x) alpha(x, y) = pi(y) q(x|y) alpha(y, x) for random pairs, with alpha
    = min(1, exp(log alpha)) as mala() computes it, the normalisers included."""
    h = 0.3
    torch.manual_seed(0)
    x, y = torch.randn(100, 1) * 2, torch.randn(100, 1) * 2
    pi = _StdNormal()

    def log_alpha(a, b):
        return pi(b) - pi(a) + localsearch.log_q(a, b, -b, h) - localsearch.log_q(b, a, -a, h)

    def log_flux(a, b):  # log pi(a) + log q(b | a) + log alpha(a, b), with q's normaliser
        lq = -(b - a + h * a).pow(2).sum(1) / (4 * h) - 0.5 * math.log(4 * math.pi * h)
        return pi(a) + lq + torch.clamp(log_alpha(a, b), max=0)

    assert torch.allclose(log_flux(x, y), log_flux(y, x), atol=1e-5)


def test_mala_leaves_the_target_invariant_and_finds_it_from_far_away():
    torch.manual_seed(0)
    x, _, rate = localsearch.mala(_StdNormal(), torch.randn(100_000, 1), 10, 0.5)
    assert abs(float(x.mean())) < 0.02 and float(x.var()) == pytest.approx(1.0, abs=0.02) and 0.5 < rate < 1
    x, lr, _ = localsearch.mala(_StdNormal(), torch.full((50_000, 1), 4.0), 100, 0.5)
    assert abs(float(x.mean())) < 0.03 and float(x.var()) == pytest.approx(1.0, abs=0.03)
    assert torch.allclose(lr, -0.5 * x[:, 0] ** 2)


def test_mala_rejects_non_finite_proposals_and_adapt_moves_towards_the_target_rate():
    class Nan(_StdNormal):
        def forward(self, x):
            return torch.where(x[:, 0] > 0, torch.full_like(x[:, 0], float("nan")), -0.5 * x[:, 0] ** 2)

    x0 = -torch.ones(1000, 1)
    x, _, _ = localsearch.mala(Nan(), x0, 5, 0.5)
    assert (x <= 0).all()
    assert localsearch.adapt(0.1, 0.9) > 0.1 > localsearch.adapt(0.1, 0.2)


def test_rank_prioritised_replay_follows_its_law():
    rp = Replay(1000, 0.5, torch.zeros(1, 1), "rank", 0.01)
    rp.add(torch.arange(1000.0)[:, None], torch.arange(1000.0))  # log R = the value: rank r holds 999 - r
    torch.manual_seed(0)
    s = rp.sample(200_000, 1000)[:, 0]
    # P(rank < r) = log(1 + r / (c m)) / log(1 + 1 / c), c m = 10
    for r in (10, 100, 500):
        want = math.log(1 + r / 10) / math.log(101)
        assert float((s > 999 - r).float().mean()) == pytest.approx(want, abs=0.01)
    u = Replay(1000, 0.5, torch.zeros(1, 1))
    u.add(torch.arange(1000.0)[:, None], torch.arange(1000.0))
    assert float((u.sample(100_000, 1000)[:, 0] < 500).float().mean()) == pytest.approx(0.5, abs=0.01)


# -- objectives on a hand-computed trajectory -------------------------------------------------------


def _traj():
    """Two trajectories of three steps with given log-probabilities."""
    lpf = torch.tensor([[-1.0, -2.0], [-0.5, -1.5], [-0.25, -0.75]])
    lpb = torch.tensor([[0.0, 0.0], [-0.3, -0.2], [-0.1, -0.4]])
    states = [torch.zeros(2, 1), torch.ones(2, 1), 2 * torch.ones(2, 1), 3 * torch.ones(2, 1)]
    return Trajectory(states, lpf, lpb, None), torch.tensor([-1.0, -3.0])


def test_tb_vargrad_db_and_forward_looking_flows_by_hand():
    t, log_r = _traj()
    log_z = torch.tensor(0.5)
    # sums: pf (-1.75, -4.25), pb (-0.4, -0.6); tb residual log Z + pf - log R - pb
    r = [0.5 - 1.75 + 1.0 + 0.4, 0.5 - 4.25 + 3.0 + 0.6]
    assert float(objectives.trajectory_balance(t, log_z, log_r)) == pytest.approx((r[0] ** 2 + r[1] ** 2) / 2)
    z = [-1.75 + 0.4 + 1.0, -4.25 + 0.6 + 3.0]
    m = sum(z) / 2
    assert float(objectives.vargrad(t, log_r)) == pytest.approx(((z[0] - m) ** 2 + (z[1] - m) ** 2) / 2)
    f = torch.tensor([[0.2, 0.1], [0.0, -0.5], [0.3, 0.4], [-1.0, -3.0]])  # flows, R at the end
    want = sum((float(f[k, b] + t.log_pf[k, b] - f[k + 1, b] - t.log_pb[k, b])) ** 2 for k in range(3) for b in range(2)) / 6
    assert float(objectives.detailed_balance(t, f)) == pytest.approx(want)


def test_forward_looking_flow_adds_the_interpolated_log_reward():
    m = model(spec(objective="db(flow = g, forward_looking = true)",
                   extra="net g = mlp(in = D, out = 1, hidden = [8], time_embed = 4)"))
    t = m.space.forward(5)
    log_r = m.log_reward(t.terminal)
    plain, _ = m.space.log_flows(t, log_r, m.nets["g"])
    look, _ = m.space.log_flows(t, log_r, m.nets["g"], m.log_reward)
    T = m.space.T
    for j in range(T):
        assert torch.allclose(look[j] - plain[j], (j / T) * m.log_reward(t.states[j]), atol=1e-5)
    assert torch.equal(look[-1], log_r)
    loss, _ = m.objective(m, torch.zeros(4, 0), 0)
    assert torch.isfinite(loss)


# -- nets and kernels -------------------------------------------------------------------------------


def test_shared_step_path_equals_the_per_row_path():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    t_shared = torch.full((1,), 4.0).expand(6)
    t_rows = torch.full((6,), 4.0)
    mlp = nets.MLP(3, 5, [16, 16], "silu", 8)
    assert torch.allclose(mlp(x, t_shared), mlp(x, t_rows), atol=1e-6)
    pis = nets.PISNet(3, 5, 16, 8, 2)
    torch.nn.init.normal_(pis._lins[-1].weight)  # not the zero start, so the output depends on x and t
    pis.horizon = 10
    assert torch.allclose(pis(x, t_shared), pis(x, t_rows), atol=1e-6)
    assert not torch.allclose(pis(x, t_rows), pis(x, t_rows + 1))
    assert torch.equal(nets.PISNet(3, 5)(x, t_rows), torch.zeros(6, 5))  # zero output layer at the start


def test_learned_variance_scales_the_forward_gaussian():
    m = model(spec(out="2 * D", kw=", learned_variance = true"))
    k = m.space.kernels["step1:forward"]
    with torch.no_grad():
        k.net._lins[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.5, -0.5]))
    x, i = torch.randn(4, 2), torch.full((4,), 2)
    d = k.dist(x, i)
    base = math.sqrt(1 / 6)
    want = torch.tensor([base * math.exp(2 * math.tanh(0.5)), base * math.exp(-2 * math.tanh(0.5))])
    assert torch.allclose(d.scale, want.expand(4, 2), atol=1e-6)
    y = torch.randn(4, 2)
    ref = torch.distributions.Normal(x, want).log_prob(y).sum(1)
    assert torch.allclose(d.log_prob(y), ref, atol=1e-5)


# -- metrics and training ---------------------------------------------------------------------------


def test_elbo_below_log_z_below_eubo_and_local_search_fills_the_buffer():
    from gfdsl.engine.evaluate import reward_metrics

    m = model(spec(out="2 * D", kw=", langevin = true", sigma="2.236",
                   train='steps = 3  batch = 32  replay = 256  replay_priority = "rank"  local_search = 5 '
                         "local_search_every = 1"))
    loss, _ = m.objective(m, torch.zeros(32, 0), 0)
    assert torch.isfinite(loss) and int(m.replay.n) == 32 + 32  # 32 rollouts (the buffer was empty), then 32 moved by MALA
    assert float(m.replay.ld_step) != 0.1  # adapted after the round
    ev = reward_metrics(m, seed=0, n=500)
    assert ev["elbo"] <= ev["log_z_true"] <= ev["eubo"]
    assert ev["log_z_elbo"] <= ev["log_z_iw"] + 1e-9


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, code, where", [
    (spec(energy="funnel(dim = 5)"), "E410", "dim"),  # the energy's dimension is not the state's
    (spec(energy="manywell(dim = 3)", D=3), "E303", "odd"),
    (spec(sigma="0"), "E303", "sigma"),
    (spec(sigma="-1"), "E303", "sigma"),
    (spec(train="local_search = 10"), "E612", "replay"),
    (spec(energy="gmm25(variance = 0)"), "E303", "variance"),
])
def test_bad_sampler_specs_are_refused_with_a_position(text, code, where):
    with pytest.raises(GfdslError) as e:
        check_source(text)
    d = e.value.diagnostics[0]
    assert d.code == code and where in str(e.value) and d.span is not None


def test_forward_looking_needs_a_chain():
    text = """
model g {
  dims { D = 2  H = 4 }
  state s : int(0, H - 1)[D]
  action inc[i in 0..D - 1] = increment(coord = i)
  action stop = exit()
  reward = hypergrid()
  net pf = mlp(in = D * H, out = D + 1, hidden = [16])
  net pb = mlp(in = D * H, out = D, hidden = [16])
  net lf = mlp(in = D * H, out = 1, hidden = [16])
  policy forward  = softmax(net = pf)
  policy backward = softmax(net = pb)
  objective = db(flow = lf, forward_looking = true)
}
"""
    try:
        check_source(text)
    except GfdslError as e:
        assert any(d.code == "E615" and "forward_looking" in str(e) for d in e.diagnostics)
    else:
        raise AssertionError("forward_looking on an action space was accepted")


@pytest.mark.parametrize("name, bound", [("gmm25", 15.0), ("funnel", 15.0), ("manywell", 80.0)])
def test_shipped_sampler_specs_train_and_bracket_log_z(tmp_path, name, bound):
    """A short run of each benchmark spec: finite estimates on the right sides of the
    exact log Z (ELBO below, EUBO above, up to Monte-Carlo noise), within a loose bound."""
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions
    from tests.conftest import ROOT

    s = train(str(ROOT / "specs" / f"sampler_{name}.gfn"),
              RunOptions(out=str(tmp_path / "run"), steps=10, batch=32, progress=False))
    z = s["log_z_true"]
    assert all(math.isfinite(s[k]) for k in ("log_z_elbo", "log_z_iw", "eubo", "w2"))
    assert z - bound < s["log_z_elbo"] < z + 0.5 and s["eubo"] > z - 0.5  # (the funnel's EUBO starts in the hundreds)
    assert (tmp_path / "run" / "samples.png").is_file()


def test_log_z_init_sets_log_z_before_training(tmp_path):
    """log_z_init: a number is log Z's start; "batch" starts it at one batch's mean
    log-weight, which for manywell (log Z = 164.7) lies far from 0."""
    from gfdsl.engine.loop import init_log_z

    m = model(spec(D=4, energy="manywell(dim = 4)", train='log_z_init = "batch"'))
    torch.manual_seed(0)
    init_log_z(m, "batch", 256)
    torch.manual_seed(0)
    from gfdsl.engine.evaluate import log_weights

    want = float(log_weights(m, m.sample(256)).mean())
    z = float(m.log_Z.detach())
    assert z == pytest.approx(want, rel=1e-5) and z > 3
    init_log_z(m, 2.5, 256)
    assert float(m.log_Z.detach()) == 2.5
    with pytest.raises(GfdslError):
        check_source(spec(train='log_z_init = "first"'))


def test_learned_bridge_correction_starts_as_the_bridge_and_is_trained_by_tb():
    fixed = model(spec())
    m = model(spec(kw="", extra="net g = pis(in = D, out = 2 * D, hidden = 8, harmonics = 4)")
              .replace("backward = brownian_bridge(sigma = 1)", "backward = brownian_bridge(sigma = 1, net = g, "
                                                                  "correction = 0.2)"))
    kb, kf = m.space.kernels["step1:backward"], fixed.space.kernels["step1:backward"]
    x, i = torch.randn(5, 2), torch.full((5,), 3)
    y = torch.randn(5, 2)
    assert torch.allclose(kb.dist(x, i).log_prob(y), kf.dist(x, i).log_prob(y), atol=1e-6)
    with torch.no_grad():
        kb.net._lins[-1].bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
    d, d0 = kb.dist(x, i), kf.dist(x, i)
    s = d0.scale
    assert torch.allclose(d.mu, d0.mu + 0.2 * torch.tanh(torch.tensor([1.0, -1.0])) * s, atol=1e-6)
    assert torch.allclose(d.scale, s * torch.exp(0.2 * torch.tanh(torch.tensor([0.5, 0.0]))), atol=1e-6)
    loss, _ = m.objective(m, torch.zeros(8, 0), 0)
    loss.backward()
    assert kb.net._lins[-1].weight.grad.abs().sum() > 0  # tb trains P_B as well


def test_a_replay_buffer_beyond_memory_is_refused_before_the_run_starts(tmp_path, capsys):
    """10 million buffered states of 4096 coordinates (about 150 GiB) against a 20 GiB
    limit: E807 with the estimate, at the `replay = ...` setting that asks for it (line
    and column), and no run folder."""
    from gfdsl.cli.app import main

    p = tmp_path / "big.gfn"
    p.write_text(spec(D=4096, energy="funnel(dim = D)", train="replay = 10000000"))
    rc = main(["run", str(p), "--steps", "2", "--out", str(tmp_path / "run"), "--no-progress", "--max-memory", "20G"])
    err = capsys.readouterr().err
    assert rc == 1 and "error[E807]" in err and "replay buffer" in err
    text = p.read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if "replay = 10000000" in t)
    col = text[line - 1].index("replay") + 1
    assert err.startswith(f"{p}:{line}:{col}:"), err
    assert not (tmp_path / "run").exists()


def test_w2_by_pot_equals_the_exact_assignment():
    from scipy.optimize import linear_sum_assignment

    from gfdsl.engine.evaluate import w2_squared

    torch.manual_seed(0)
    a, b = torch.randn(300, 3), torch.randn(300, 3) * 2 + 1
    c = torch.cdist(a.double(), b.double()).pow(2).numpy()
    r, col = linear_sum_assignment(c)
    assert w2_squared(a, b) == pytest.approx(float(c[r, col].mean()), rel=1e-9)
