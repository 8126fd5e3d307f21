"""Reward-driven chains and posteriors through the one engine: the diffusion sampler's
kernels against torch.distributions and hand values, the log Z-hat estimator where P_F
is known in closed form, targets against their definitions, relative trajectory
balance against a hand computation, off-policy chains, a bridge's per-round metrics,
a posterior's prior loaded from a run, and a non-finite energy stopping a run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gfdsl.compile.lower import lower
from gfdsl.driver import check_source
from gfdsl.errors import GfdslError

SAMPLER = """
model s {
  dims { T = 8  D = 2  S = 1.5 }
  state x[t in 0..T] : real[D]
  source x[0] = 0
  net f = mlp(in = D, out = %(out)s, hidden = [16], time_embed = 8)
  step x[t - 1] -> x[t] for t in 1..T {
    forward  = controlled_sde(net = f, sigma = S%(lgv)s)
    backward = brownian_bridge(sigma = S)
  }
  energy = gaussian_mixture(means = %(means)s, scales = [%(scale)s])
  objective = tb
  train { %(train)s }
}
"""


def sampler(means="[[0, 0]]", scale="1.5", langevin=False, train="", seed=0):
    text = SAMPLER % dict(out="2 * D" if langevin else "D", lgv=", langevin = true" if langevin else "", means=means,
                          scale=scale, train=train)
    torch.manual_seed(seed)
    c = check_source(text)
    return c, lower(c.graph, c.source)


def test_brownian_bridge_against_torch_distributions():
    """P_B(x_k | x_{k+1}) = N(x_{k+1} k / (k + 1), sigma^2 (1 / T) k / (k + 1)); the
    step into the source is the point 0 (log P_B = 0)."""
    from gfdsl.runtime.samplers import BrownianBridge

    T, sigma = 8, 1.5
    bb = BrownianBridge(sigma, T)
    x1 = torch.randn(6, 2)
    i = torch.tensor([0, 1, 2, 3, 5, 7])
    x0 = torch.randn(6, 2)
    x0[0] = 0.0
    d = bb.dist(x1, i)
    k = i.double()[:, None]
    ref = torch.distributions.Normal(x1.double() * k / (k + 1), sigma * (k / (k + 1) / T).sqrt().clamp(min=1e-300))
    want = ref.log_prob(x0.double()).sum(1)
    got = d.log_prob(x0)
    assert got[0] == 0.0
    assert torch.allclose(got[1:].double(), want[1:], atol=1e-5)
    s = d.sample()
    assert torch.equal(s[0], torch.zeros(2))  # the bridge ends at the origin


def test_controlled_sde_is_brownian_motion_at_start_and_langevin_adds_the_score():
    c, m = sampler(langevin=False)
    k = m.space.kernels["step1:forward"]
    x = torch.randn(5, 2)
    i = torch.full((5,), 3)
    d = k.dist(x, i)  # zero drift (zero-initialised last layer): N(x, sigma^2 dt I)
    ref = torch.distributions.Normal(x, 1.5 * math.sqrt(1 / 8))
    y = torch.randn(5, 2)
    assert torch.allclose(d.log_prob(y), ref.log_prob(y).sum(1), atol=1e-5)
    # Langevin: drift = net[:D] + net[D:] * grad log R(x); with the net's output fixed at
    # (0, 0, 1, 1) the drift is the score of N(mu, s^2 I), -(x - mu) / s^2
    c, m = sampler(means="[[1, -2]]", scale="0.5", langevin=True)
    k = m.space.kernels["step1:forward"]
    with torch.no_grad():
        k.net.body[-1].bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))
    drift, lv = k.drift(x, i)
    assert lv is None
    want = -(x - torch.tensor([1.0, -2.0])) / 0.25
    assert torch.allclose(drift, want, atol=1e-4)


def test_log_z_hat_is_exact_where_p_f_is_known_in_closed_form(tmp_path):
    """Zero drift makes P_F the Brownian motion, x_T ~ N(0, sigma^2 I); with that very
    Gaussian as the target, P_B (the bridge) is its exact posterior, every trajectory's
    log-weight is log Z = 0, and TB's gradient vanishes: a short run keeps it so, and
    both estimators read 0. With a wider target the ELBO falls below log Z and the
    importance-weighted estimate lies between them (a narrower target, so that the
    importance weights have a finite variance)."""
    from gfdsl.engine.evaluate import reward_metrics

    spec = tmp_path / "s.gfn"
    spec.write_text(SAMPLER % dict(out="D", lgv="", means="[[0, 0]]", scale="1.5", train="steps = 5  batch = 64"))
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions

    s = train(str(spec), RunOptions(out=str(tmp_path / "run"), progress=False))
    assert abs(s["log_z_elbo"]) < 1e-4 and abs(s["log_z_iw"]) < 1e-4 and s["log_z_true"] == 0.0
    c, m = sampler(scale="1.0")
    ev = reward_metrics(m, seed=0, n=20_000)
    assert ev["log_z_elbo"] < ev["log_z_iw"] < 0.05 and ev["log_z_elbo"] < -0.1
    # the closed form of the ELBO here: -KL(N(0, 1.5^2 I) || N(0, 1^2 I))
    kl = 2 * (math.log(1.0 / 1.5) + 1.5 ** 2 / (2 * 1.0 ** 2) - 0.5)
    assert ev["log_z_elbo"] == pytest.approx(-kl, abs=0.05)


def test_gaussian_mixture_against_torch_distributions_and_its_sampler():
    from gfdsl.runtime.targets import GaussianMixture

    args = {"means": [[-5.0, 0.0], [5.0, 1.0], [0.0, 3.0]], "scales": [0.5, 1.0, 2.0], "weights": [1.0, 2.0, 3.0]}
    g = GaussianMixture(args)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor([1.0, 2.0, 3.0]) / 6),
        torch.distributions.Independent(torch.distributions.Normal(torch.tensor(args["means"]),
                                                                   torch.tensor(args["scales"])[:, None].expand(3, 2)), 1))
    x = torch.randn(50, 2) * 4
    assert torch.allclose(g(x), mix.log_prob(x) + math.log(6), atol=1e-4)  # unnormalised weights: log Z = log 6
    assert g.log_z == pytest.approx(math.log(6))
    torch.manual_seed(0)
    s = g.sample(60_000)
    assert torch.allclose(s.mean(0), mix.mean, atol=0.06)
    assert torch.allclose(s.var(0), mix.variance, rtol=0.05)


def test_logistic_reward_is_a_soft_half_space():
    from gfdsl.runtime.targets import Logistic

    r = Logistic({"coord": 1, "scale": 3.0, "offset": 0.5})
    x = torch.tensor([[0.0, 0.5], [9.0, 2.0], [0.0, -1.0]])
    want = torch.sigmoid(3.0 * (x[:, 1] - 0.5)).log()
    assert torch.allclose(r(x), want, atol=1e-6)


POSTERIOR = """
model p {
  dims { T = 3  D = 2 }
  schedule beta = linear(start = 1e-2, end = 0.2, steps = T)
  state x[t in 0..T] : real[D]
  source x[T] ~ normal()
  data x[0]
  net eps = mlp(in = D, out = D, hidden = [8], time_embed = 8)
  step x[t] -> x[t - 1] for t in 1..T {
    forward  = ddpm_denoiser(net = eps, schedule = beta)
    backward = ddpm_noising(schedule = beta)
  }
  dataset = toy2d(name = "8gaussians", n_train = 256, n_test = 64)
  reward = logistic(coord = 0, scale = 2.0)
  objective = elbo(weighting = "simple") then rtb
  train { prior_steps = 4  steps = 4  batch = 16 }
}
"""


def test_rtb_matches_a_hand_computation():
    """(log Z + sum log P_F^post - sum log P_F^prior - log R(x))^2, each term computed
    independently from the kernels and the reward on the posterior's own trajectories."""
    torch.manual_seed(0)
    c = check_source(POSTERIOR)
    m = lower(c.graph, c.source)
    m.freeze_prior()
    with torch.no_grad():  # the posterior moves away from its prior
        for p in m.nets.parameters():
            p.add_(0.3 * torch.randn_like(p))
        m.log_Z.fill_(0.4)
    torch.manual_seed(1)
    loss, terms = m.loss(torch.zeros(5, 2), step=10)  # past the prior stage
    torch.manual_seed(1)
    t = m.space.forward(5)  # the same draws: on-policy, no exploration, no replay
    post = prior = 0.0
    for s in m.space.plan.steps:
        i = torch.full((5,), s.pos)
        post = post + m.space.kernels[s.fwd].dist(t.states[s.src], i).log_prob(t.states[s.dst])
        prior = prior + m.prior_chain.kernels[s.fwd].dist(t.states[s.src], i).log_prob(t.states[s.dst])
    log_r = torch.sigmoid(2.0 * t.states[-1][:, 0]).log()
    want = ((0.4 + post - prior - log_r) ** 2).mean()
    assert float(terms["rtb"].detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    assert abs(float(want.detach())) > 1e-3  # the case is not 0 = 0


def test_posterior_stages_and_a_prior_loaded_from_a_run(tmp_path):
    """The prior stage trains the prior, which is frozen at the stage boundary; --prior
    loads a finished data-trained run's nets into the prior (and the posterior's start),
    and refuses a run whose nets do not match."""
    from gfdsl.engine.checkpoint import CKPT, read_checkpoint
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions

    spec = tmp_path / "p.gfn"
    spec.write_text(POSTERIOR)
    s = train(str(spec), RunOptions(out=str(tmp_path / "a"), progress=False))
    assert s["steps"] == 8 and s["prior_steps"] == 4 and "log_z_elbo" in s
    prior_spec = tmp_path / "prior.gfn"
    prior_spec.write_text(POSTERIOR.replace('  reward = logistic(coord = 0, scale = 2.0)\n', "")
                          .replace(' then rtb', "").replace("prior_steps = 4  ", ""))
    train(str(prior_spec), RunOptions(out=str(tmp_path / "prior"), progress=False))
    s = train(str(spec), RunOptions(out=str(tmp_path / "b"), progress=False, prior=str(tmp_path / "prior")))
    assert s["steps"] == 4 and s["prior_steps"] == 0 and s["prior"] == str(tmp_path / "prior")
    saved, _ = read_checkpoint(tmp_path / "prior" / CKPT)
    post, _ = read_checkpoint(tmp_path / "b" / CKPT)
    for k, v in saved.items():
        if k.startswith("model.nets."):  # the frozen prior holds the prior run's nets
            assert torch.equal(post[k.replace("model.nets.", "model.prior_nets.")], v), k
    other = tmp_path / "other.gfn"
    other.write_text(prior_spec.read_text().replace("hidden = [8]", "hidden = [12]"))
    train(str(other), RunOptions(out=str(tmp_path / "other"), progress=False))
    with pytest.raises(GfdslError) as e:
        train(str(spec), RunOptions(out=str(tmp_path / "c"), progress=False, prior=str(tmp_path / "other")))
    assert "E803" in e.value.render() and "net eps differs" in e.value.render()
    sched = tmp_path / "sched.gfn"  # the same nets, another noise schedule: not this prior either
    sched.write_text(prior_spec.read_text().replace("end = 0.2", "end = 0.1"))
    train(str(sched), RunOptions(out=str(tmp_path / "sched"), progress=False))
    with pytest.raises(GfdslError) as e:
        train(str(spec), RunOptions(out=str(tmp_path / "e"), progress=False, prior=str(tmp_path / "sched")))
    assert "E803" in e.value.render() and "schedule beta differs" in e.value.render()
    no_stage = tmp_path / "n.gfn"
    no_stage.write_text(POSTERIOR.replace("prior_steps = 4  ", ""))
    with pytest.raises(GfdslError) as e:
        train(str(no_stage), RunOptions(out=str(tmp_path / "d"), progress=False))
    assert "E802" in e.value.render() and "--prior RUN" in e.value.render()


@pytest.mark.parametrize("train", ["exploration = 2.0  exploration_steps = 10", "replay = 64  replay_fraction = 0.5"])
def test_off_policy_chains_train(train):
    """Exploration noise and a replay buffer of terminal states (backward trajectories
    drawn by the bridge) on a sampler: finite losses, the buffer fills, and the
    exploring rollout's log P_F is P_F's own (rescoring agrees)."""
    from gfdsl.engine import offpolicy
    from gfdsl.engine.module import param_groups

    c, m = sampler(means="[[2, 2], [-2, -2]]", scale="0.7", train=train)
    opt = torch.optim.Adam(param_groups(m, 1e-3, 0.1))
    for step in range(12):
        loss, _ = m.loss(torch.zeros(32, 0), step)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if "replay" in train:
        assert int(m.replay.n) > 64
        t = offpolicy.draw(m, 32, 20, score=True)
        assert t.log_pf is None and len(t.states) == 9 and t.states[-1].shape == (32, 2)  # rescored by the objective
    else:
        assert offpolicy.behaviour(m, 5) == pytest.approx(1.0) and offpolicy.behaviour(m, 10) == 0.0
        t = m.space.forward(16, explore=2.0, score=True)
        again = m.space.forward_log_probs(t.states, 16, {})
        assert torch.allclose(t.log_pf, again, atol=1e-5)


def test_bridge_logs_sliced_w2_after_every_round(tmp_path):
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions
    from tests.conftest import ROOT

    text = (ROOT / "specs" / "bridge_moons_8gaussians.gfn").read_text().replace("T = 20", "T = 4")
    spec = tmp_path / "b.gfn"
    spec.write_text(text)
    s = train(str(spec), RunOptions(steps=12, batch=32, out=str(tmp_path / "run"), progress=False))
    assert [r["round"] for r in s["rounds"]] == [1, 2, 3, 4, 5, 6] and all(r["sliced_w2"] > 0 for r in s["rounds"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines if "round" in r] == [1, 2, 3, 4, 5, 6]
    assert s["sliced_w2"] > 0 and "test_nll_nats" not in s  # no source density: no likelihood


def test_non_finite_energy_stops_the_run_naming_it_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    """An energy that turns NaN on the sampled states after a few good steps: the run
    stops with E804 at that step, naming the energy and its position, and the last good
    checkpoint is kept."""
    from gfdsl.engine.checkpoint import CKPT, read_checkpoint
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions
    from gfdsl.runtime.targets import GaussianMixture

    calls = {"n": 0}
    real = GaussianMixture.forward

    def flaky(self, x):
        calls["n"] += 1
        v = real(self, x)
        return v * float("nan") if calls["n"] > 6 else v

    monkeypatch.setattr(GaussianMixture, "forward", flaky)
    spec = tmp_path / "s.gfn"
    spec.write_text(SAMPLER % dict(out="D", lgv="", means="[[0, 0]]", scale="1.5",
                                   train="steps = 20  batch = 16  checkpoint_every = 3"))
    with pytest.raises(GfdslError) as e:
        train(str(spec), RunOptions(out=str(tmp_path / "run"), progress=False, log_every=1))
    msg = e.value.render()
    assert "E804" in msg and "at step 7" in msg and "energy gaussian_mixture() at" in msg and "s.gfn:11:3" in msg
    assert "last good checkpoint (step 6)" in msg
    _, meta = read_checkpoint(tmp_path / "run" / CKPT)
    assert meta["step"] == "6"


def test_posterior_draws_a_share_of_its_batch_back_from_data():
    """data_fraction: that share of an rtb batch is P_B's trajectories from the batch's
    data points (they end exactly there), the rest the posterior's own; the loss is
    finite and reaches the posterior's nets and log Z."""
    from gfdsl.engine import offpolicy

    torch.manual_seed(0)
    c = check_source(POSTERIOR.replace("batch = 16 }", "batch = 16  data_fraction = 0.25 }"))
    m = lower(c.graph, c.source)
    m.freeze_prior()
    x = torch.randn(16, 2)
    t = offpolicy.draw(m, 16, 10, score=True, data=x)
    assert t.log_pf is None and torch.equal(t.terminal[12:], x[:4])
    loss, _ = m.loss(x, step=10)
    loss.backward()
    assert torch.isfinite(loss) and m.log_Z.grad is not None
    assert all(p.grad is not None for p in m.nets.parameters())
