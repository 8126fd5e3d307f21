"""Improved diffusion: v-prediction and its conversions, learned variances and the hybrid
loss (its L_vlb against the trajectory ELBO), few-step and DDIM sampling (eta = 1 over all
steps is the ancestral sampler), and their mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from gfdsl.compile.lower import lower
from gfdsl.driver import check_source
from gfdsl.engine.denoising import ddpm_parts, denoising_loss, denoising_parts, q_sample, step_term
from gfdsl.engine.fewstep import few_step_sample, respaced
from gfdsl.engine.objectives import elbo
from gfdsl.errors import GfdslError

SPEC = """model m {{
  dims {{
    T = {T}
    D = 2
  }}
  schedule beta = {sched}
  state x[t in 0..T] : real[D]
  source x[T] ~ normal()
  data x[0]
  net n = mlp(in = D, out = {out}, hidden = [32], time_embed = 16)
  step x[t] -> x[t - 1] for t in 1..T {{
    forward  = ddpm_denoiser(net = n, schedule = beta, param = "{param}", variance = "{var}")
    backward = ddpm_noising(schedule = beta)
  }}
  dataset = toy2d(name = "8gaussians")
  objective = elbo(weighting = "{weighting}")
}}
"""


def model(param="eps", var="beta", T=4, weighting="full", sched="linear(start = 0.05, end = 0.3, steps = T)",
          shake=True):
    torch.manual_seed(0)
    out = "2 * D" if var == "learned" else "D"
    c = check_source(SPEC.format(T=T, param=param, var=var, out=out, weighting=weighting, sched=sched))
    m = lower(c.graph, c.source)
    if shake:  # away from the zero-ish start, so every output matters
        for p in m.parameters():
            p.data.add_(0.3 * torch.randn_like(p))
    return m


def spec_file(path, train: dict, **kw):
    """SPEC with these format fields and a train block of `train`'s settings, at path."""
    block = "".join(f"    {k} = {v}\n" for k, v in train.items())
    path.write_text(SPEC.format(**kw).rstrip()[:-1] + "  train {\n" + block + "  }\n}\n")
    return path


def test_v_x0_eps_conversions_against_hand_values():
    fk = ddpm_parts(model("v"))[0]
    b = torch.linspace(0.05, 0.3, 4, dtype=torch.float64)
    abar = torch.cumprod(1 - b, 0)
    i = torch.tensor([0, 1, 2, 3])
    x0 = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0], [2.0, 2.0]])
    eps = torch.tensor([[0.3, 0.1], [-1.0, 2.0], [0.0, -0.5], [1.5, 1.0]])
    a, s = abar[i].sqrt().float()[:, None], (1 - abar[i]).sqrt().float()[:, None]
    xt = q_sample(fk, x0, i, eps)
    assert torch.allclose(xt, a * x0 + s * eps, atol=1e-6)
    # hand value of v at position 2: sqrt(abar_3) * eps - sqrt(1 - abar_3) * x0
    ab3 = (1 - 0.05) * (1 - (0.05 + 0.25 / 3)) * (1 - (0.05 + 2 * 0.25 / 3))  # betas 0.05 + k 0.25 / 3
    v2 = [math.sqrt(ab3) * e - math.sqrt(1 - ab3) * x for e, x in zip([0.0, -0.5], [-1.0, 3.0])]
    for param, want in (("eps", eps), ("x0", x0), ("v", a * eps - s * x0)):
        fk.param = param
        out = fk.target(x0, eps, i)
        assert torch.allclose(out, want, atol=1e-6)
        px0, peps = fk.predict(xt, i, out)  # every parameterisation recovers both
        assert torch.allclose(px0, x0, atol=1e-5) and torch.allclose(peps, eps, atol=1e-5)
        # and its mean is the true posterior's, c0 x0 + ct x_t (Ho et al. eq. 7)
        c0 = abar[i - 1].clamp(max=1).where(i > 0, torch.ones(4, dtype=torch.float64)).sqrt() * b[i] / (1 - abar[i])
        ct = (1 - b[i]).sqrt() * (1 - abar[i - 1].where(i > 0, torch.ones(4, dtype=torch.float64))) / (1 - abar[i])
        assert torch.allclose(fk._mean(xt, i, out), c0.float()[:, None] * x0 + ct.float()[:, None] * xt, atol=1e-5)
    assert torch.allclose(fk.target(x0, eps, i)[2], torch.tensor(v2), atol=1e-5)


def test_learned_variance_interpolates_beta_and_beta_tilde():
    fk = ddpm_parts(model("v", "learned"))[0]
    s = fk.s
    i = torch.tensor([1, 2, 3])
    one = torch.ones(3, 2)
    assert torch.allclose(fk.log_var(i, one), s.log_beta[i][:, None].expand(3, 2))
    assert torch.allclose(fk.log_var(i, -one), s.log_beta_tilde[i][:, None].expand(3, 2))
    mid = fk.log_var(i, 0 * one)
    assert torch.allclose(mid, (0.5 * (s.log_beta[i] + s.log_beta_tilde[i]))[:, None].expand(3, 2))
    x = torch.randn(3, 2)
    out, u = fk.outputs(x, i)
    d = fk.dist(x, i)
    ref = torch.distributions.Normal(fk._mean(x, i, out), (0.5 * fk.log_var(i, u)).exp())
    y = torch.randn(3, 2)
    assert torch.allclose(d.log_prob(y), ref.log_prob(y).sum(1), atol=1e-5)


def test_vlb_terms_sum_to_the_trajectory_elbo():
    """sum_t L_{t-1} + KL(q(x_T | x_0) || N(0, I)) = -E_{P_B}[log P(x_T) + log P_F - log P_B],
    the full-weighting elbo's expectation, for one x_0 of a 4-step learned-variance chain."""
    m = model("v", "learned")
    fk = ddpm_parts(m)[0]
    s = fk.s
    x0 = torch.tensor([[0.7, -1.2]])
    n = 40000
    torch.manual_seed(1)
    with torch.no_grad():
        t = m.infer(x0.expand(n, 2).contiguous(), 1)
        traj = -(t.log_prior + t.log_pf.sum(0) - t.log_pb.sum(0))
        want, se = traj.mean(), traj.std() / math.sqrt(n)
        total = 0.0
        for pos in range(s.T):
            i = torch.full((n,), pos)
            xt = q_sample(fk, x0.expand(n, 2), i, torch.randn(n, 2))
            out, u = fk.outputs(xt, i)
            total = total + step_term(fk, x0.expand(n, 2), xt, i, out, u).mean()
        ab = s.abar[-1]
        prior_kl = 0.5 * (ab * (x0**2) + (1 - ab) - 1 - (1 - ab).log()).sum()
        got = total + prior_kl
    assert abs(float(got - want)) < 4 * float(se) + 0.02, (float(got), float(want), float(se))
    # the trajectory estimate is what elbo() trains on
    assert torch.isclose(elbo(t), traj.mean(), rtol=1e-5)


def test_hybrid_loss_trains_the_variance_and_simple_refuses_it():
    m = model("v", "learned")
    fk = ddpm_parts(m)[0]
    x0 = torch.randn(64, 2)
    torch.manual_seed(0)
    simple, _ = denoising_loss(fk, x0, "simple")
    torch.manual_seed(0)
    hybrid, _ = denoising_loss(fk, x0, "hybrid", 0.001)
    assert float(hybrid.detach()) > float(simple.detach())  # the same draws plus a positive L_vlb term
    hybrid.backward()
    last = [p for p in fk.net.parameters()][-1]  # the output bias: u's half gets a gradient
    assert last.grad[2:].abs().sum() > 0
    with pytest.raises(GfdslError) as e:
        denoising_parts(m, "simple", None, None)
    assert "hybrid" in e.value.render()


def test_ddim_eta_one_over_all_steps_is_the_ancestral_sampler():
    m = model("eps", "beta_tilde", T=6)
    fk = ddpm_parts(m)[0]
    s = fk.s
    c = respaced(s, s.T)
    assert torch.equal(c["i"], torch.arange(s.T))
    assert torch.allclose(c["beta"], s.beta, rtol=1e-4) and torch.allclose(c["beta_tilde"][1:], s.beta_tilde[1:], rtol=1e-4)
    # one DDIM step (eta = 1) from x_t has the kernel's mean and variance at every position
    x = torch.randn(5, 2)
    for pos in range(s.T):
        i = torch.full((5,), pos)
        out, _ = fk.outputs(x, i)
        x0, eps = fk.predict(x, i, out)
        prev = c["prev"][pos]
        var = c["beta_tilde"][pos]
        mu = prev.sqrt() * x0 + (1 - prev - var).clamp_min(0).sqrt() * eps
        d = fk.dist(x, i)
        assert torch.allclose(mu, d.mean, atol=1e-4), pos
        assert torch.allclose(var.sqrt().expand(5, 2), d.scale, rtol=1e-4), pos
    # and in distribution, seeded: samples of both samplers agree in mean and spread
    torch.manual_seed(0)
    a = few_step_sample(m, 20000, None, 1.0)
    torch.manual_seed(1)
    b = m.space.forward(20000).terminal
    se = 5 * b.std(0) * math.sqrt(2 / 20000)  # five standard errors of a difference of means
    assert ((a.mean(0) - b.mean(0)).abs() < se).all() and torch.allclose(a.std(0), b.std(0), rtol=0.05)
    torch.manual_seed(2)  # the strided ancestral sampler with all steps is the chain itself
    a2 = few_step_sample(m, 20000, None, None)
    assert ((a2.mean(0) - b.mean(0)).abs() < se).all() and torch.allclose(a2.std(0), b.std(0), rtol=0.05)


def test_respacing_keeps_the_ends_and_eta_zero_is_deterministic():
    m = model("v", "learned", T=10)
    s = ddpm_parts(m)[0].s
    c = respaced(s, 3)
    assert c["i"].tolist() == [0, 4, 9] or c["i"].tolist() == [0, 5, 9]
    assert torch.allclose(c["abar"], s.abar[c["i"]])
    assert torch.allclose(1 - c["abar"] / c["prev"], c["beta"], atol=1e-6)
    assert respaced(s, 1)["i"].tolist() == [9]
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(few_step_sample(m, 4, 3, 0.0))
    assert torch.equal(outs[0], outs[1])  # eta = 0: the source noise is the only randomness
    assert not torch.allclose(outs[0], outs[2])


def test_few_step_sampling_cli_and_its_mistakes(tmp_path, capsys):
    from gfdsl.cli.app import main

    spec = spec_file(tmp_path / "v.gfn", {"steps": 3, "batch": 16}, T=8, param="v", var="learned", out="2 * D",
                     weighting="hybrid", sched="cosine(steps = T)")
    run = tmp_path / "r"
    assert main(["run", str(spec), "--out", str(run), "--eval-n", "20", "--no-progress"]) == 0
    import numpy as np

    assert main(["sample", str(run), "-n", "30", "--steps", "3", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (30, 2)
    assert main(["sample", str(run), "-n", "30", "--steps", "3", "--eta", "0", "-o", str(tmp_path / "d.npy")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--steps", "9"]) == 1
    assert "--steps: error[E709]" in capsys.readouterr().err
    assert main(["sample", str(run), "--eta", "1.5"]) == 1
    assert "outside [0, 1]" in capsys.readouterr().err


def test_few_steps_refused_for_a_model_that_is_not_a_ddpm_chain():
    from gfdsl.engine.given import check_few_steps

    text = SPEC.format(T=2, param="eps", var="beta", out="D", weighting="full", sched="linear(start = 0.1, end = 0.2, steps = T)")
    text = text.replace("forward  = ddpm_denoiser(net = n, schedule = beta, param = \"eps\", variance = \"beta\")",
                        "forward  = gaussian(net = n, std = 0.1)")
    c = check_source(text)
    m = lower(c.graph, c.source)
    with pytest.raises(GfdslError) as e:
        check_few_steps(m, 2, None)
    assert "not one" in e.value.render()


def test_checker_sizes_a_learned_variance_net():
    with pytest.raises(GfdslError) as e:
        check_source(SPEC.format(T=4, param="v", var="learned", out="D", weighting="hybrid",
                                 sched="cosine(steps = T)"))
    r = e.value.render()
    assert "E402" in r and "variance interpolation" in r and "output 4 values" in r


# -- EMA of the weights ---------------------------------------------------------------------------


def test_ema_update_rule_against_hand_values():
    from gfdsl.engine.ema import EMA

    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema = EMA(lin, 0.9)
    for w in (4.0, 0.0):
        with torch.no_grad():
            lin.weight.fill_(w)
        ema.update()
    # 2 -> 0.9 * 2 + 0.1 * 4 = 2.2 -> 0.9 * 2.2 + 0.1 * 0 = 1.98
    assert math.isclose(float(ema.shadow[0]), 1.98, rel_tol=1e-6)
    with ema.applied():
        assert math.isclose(float(lin.weight), 1.98, rel_tol=1e-6)
    assert float(lin.weight) == 0.0  # the raw weights come back


def test_ema_run_evaluates_with_the_averages_and_resumes_them(tmp_path):
    import json
    import shutil

    from gfdsl.cli.app import main
    from gfdsl.engine.checkpoint import CKPT, PREV, read_checkpoint

    spec = spec_file(tmp_path / "e.gfn", {"steps": 40, "batch": 32, "lr": 0.01, "ema": 0.9, "checkpoint_every": 20},
                     T=4, param="eps", var="beta", out="D", weighting="simple",
                     sched="linear(start = 0.05, end = 0.3, steps = T)")
    full = tmp_path / "full"
    common = ["--no-progress", "--eval-n", "50", "--eval-k", "4"]
    assert main(["run", str(spec), "--out", str(full), *common]) == 0
    a, _ = read_checkpoint(full / CKPT)
    emas = [k for k in a if k.startswith("ema.")]
    assert emas and any(not torch.equal(a[k], a["model." + k[4:]]) for k in emas)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["ema"] == 0.9
    # gfdsl eval loads the averages: the same estimate as the run's own evaluation
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["eval", str(full), "--n", "50", "--k", "4"]) == 0
    assert math.isclose(json.loads(buf.getvalue())["test_nll_nats"], summary["test_nll_nats"], rel_tol=1e-6)
    # resumed from step 20, the averages end where the uninterrupted run's did
    half = tmp_path / "half"
    shutil.copytree(full, half)
    (half / CKPT).unlink()
    (half / PREV).rename(half / CKPT)
    (half / "summary.json").unlink()
    assert main(["run", "--resume", str(half), *common]) == 0
    b, _ = read_checkpoint(half / CKPT)
    for k in emas:
        assert torch.equal(a[k], b[k]), k
