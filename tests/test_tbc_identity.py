"""The TBC gradient identity (Zhang et al. 2022, MLE-GFN) on a spec small enough to
enumerate: for one x and z_1, z_2 ~ P_B(.|x), with the samples held fixed and log P_F
detached, E[grad_B (a_1 - a_2)^2] = 4 grad_B KL(P_B(.|x) || P_F(.|x)), where
a = log P_F(z, x) - log P_B(z | x). The left side is computed with gfdsl's own tbc term
on every pair of trajectories, weighted by its probability; the right side by exact
enumeration and autograd."""

from __future__ import annotations

import itertools

import torch

from gfdsl.engine.objectives import tbc
from gfdsl.engine.trajectory import Trajectory
from tests.test_runtime import TINY_LATENT, random_model

# the two-layer binary model of tests/test_runtime.py, trained by ELBO for P_F and TBC for P_B
SPEC = TINY_LATENT.replace('objective = elbo(train = "both")', "objective = elbo + tbc(k = 2)")
assert "tbc(k = 2)" in SPEC


def test_tbc_gradient_is_four_times_the_kl_gradient():
    m = random_model(SPEC)
    enc_params = list(m.space.kernels["step1:backward"].parameters())
    x = torch.tensor([[1.0, 0.0, 1.0]])
    zs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))  # the 4 latent values
    tbc_args = next(t["args"] for t in m.spec["objective"] if t["term"] == "tbc")

    def log_q(z):  # log P_B(z | x), differentiable in the encoder
        return m.space.kernels["step1:backward"].dist(x.expand(len(z), 3), torch.zeros(len(z), dtype=torch.long)).log_prob(z)

    # left: sum over ordered pairs (z1, z2) of q(z1) q(z2) * grad of gfdsl's tbc term
    with torch.no_grad():
        w = log_q(zs).exp()
    lhs = torch.zeros(())
    for i, j in itertools.product(range(4), repeat=2):
        states = [torch.stack([zs[i], zs[j]]), x.expand(2, 3)]  # k = 2 trajectories of one x
        t = Trajectory(states, m.space.forward_log_probs(states, 2, {}), m.space.backward_log_probs(states, 2),
                       m.space.source_log_prob(states[0]))
        lhs = lhs + w[i] * w[j] * tbc(t, tbc_args, 1)
    g_lhs = torch.autograd.grad(lhs, enc_params)

    # right: KL(q(.|x) || p(.|x)) by enumeration
    with torch.no_grad():
        log_joint = m.space.source_log_prob(zs) + m.space.kernels["step1:forward"].dist(
            zs, torch.zeros(4, dtype=torch.long)).log_prob(x.expand(4, 3))
        log_post = log_joint - torch.logsumexp(log_joint, 0)
    lq = log_q(zs)
    kl = (lq.exp() * (lq - log_post)).sum()
    g_kl = torch.autograd.grad(kl, enc_params)

    for a, b in zip(g_lhs, g_kl):
        assert torch.allclose(a, 4 * b, atol=1e-5, rtol=1e-4), (a, 4 * b)
    assert any(b.abs().max() > 1e-3 for b in g_kl)  # the identity is not 0 = 0
