"""Denoising losses of a DDPM chain, at one uniformly drawn step through the noising
kernel's closed-form marginal q(x_t | x_0) instead of a whole backward trajectory.

  simple   L_simple = ||target - net(x_t, t)||^2 averaged over values (Ho et al. 2020,
           eq. 14), target eps, x_0 or v as the denoiser's `param` says
  hybrid   L_simple + lamda * L_vlb (Nichol & Dhariwal 2021, sec. 3.1), L_vlb estimated
           as T * L_t per value (nats), L_t the step's term of the ELBO with the mean
           detached, so L_vlb trains the learned variance and L_simple the mean

The step terms (Ho et al. eq. 5): for t >= 2, L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ||
p(x_{t-1} | x_t)); for t = 1, L_0 = -log p(x_0 | x_1). Their sum over t plus
KL(q(x_T | x_0) || p(x_T)) is the negative ELBO, -E_{P_B}[log P_F - log P_B]; a test
checks the sum against the trajectory estimate.
"""

from __future__ import annotations

import torch

from gfdsl.errors import GfdslError, diag
from gfdsl.runtime.kernels import DDPMDenoiser, DDPMNoising, DiscretizedNormal, diag_normal


def ddpm_parts(model) -> tuple[DDPMDenoiser, DDPMNoising] | None:
    """The one ddpm_denoiser and the one ddpm_noising kernel that every step of the model
    uses, sharing a schedule, steps at positions 0..T-1, no context; None otherwise."""
    steps = model.space.plan.steps if hasattr(model.space, "plan") else ()
    f = {s.fwd for s in steps}
    b = {s.bwd for s in steps}
    ks = model.space.kernels if steps else {}
    fk = ks[next(iter(f))] if len(f) == 1 else None
    bk = ks[next(iter(b))] if len(b) == 1 and None not in b else None
    ok = isinstance(fk, DDPMDenoiser) and isinstance(bk, DDPMNoising) and fk.s is bk.s \
        and sorted(s.pos for s in steps) == list(range(len(steps))) and not any(s.ctx for s in steps)
    return (fk, bk) if ok else None


def denoising_parts(model, weighting: str, span, source) -> DDPMDenoiser:
    """The denoiser a `simple` or `hybrid` elbo trains; E802 where the model has none, or
    where L_simple alone would leave a learned variance untrained."""
    parts = ddpm_parts(model)
    if parts is None:
        raise GfdslError([diag("E802", source, _span(span),
                               message=f'elbo(weighting = "{weighting}") needs one ddpm_denoiser() forward and one '
                                       "ddpm_noising() backward kernel sharing a schedule on every step",
                               hint='use elbo(weighting = "full") for other structures')])
    fk = parts[0]
    if weighting == "simple" and fk.variance == "learned":
        raise GfdslError([diag("E802", source, _span(span),
                               message='elbo(weighting = "simple") gives a learned variance no gradient: '
                                       "L_simple reads only the mean",
                               hint='use elbo(weighting = "hybrid") (L_simple + lamda L_vlb), or "full"')])
    return fk


def q_sample(fk: DDPMDenoiser, x0: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) for step positions i (B,) (t = i + 1), from the noise eps (B, n)."""
    s = fk.s
    return s.sqrt_abar[i][:, None] * x0 + s.sqrt_1m_abar[i][:, None] * eps


def _gauss_kl(m1, lv1, m2, lv2) -> torch.Tensor:
    """KL(N(m1, e^lv1) || N(m2, e^lv2)) summed over values: (B,)."""
    return 0.5 * (lv2 - lv1 + (lv1.exp() + (m1 - m2) ** 2) / lv2.exp() - 1).sum(1)


def step_term(fk: DDPMDenoiser, x0, xt, i, out, u, detach_mean: bool = False) -> torch.Tensor:
    """L_{t-1} (B,) in nats at positions i (t = i + 1), from the net's outputs (out, u)
    at x_t: the KL to the true posterior where t >= 2, the decoder's -log p(x_0 | x_1)
    where t = 1 (a probability under a discretised decoder)."""
    s = fk.s
    mu = fk._mean(xt, i, out)
    mu = mu.detach() if detach_mean else mu
    lv = fk.log_var(i, u)
    lv = lv if lv.dim() == 2 else lv[:, None].expand_as(mu)
    q_mu = s.c0[i][:, None] * x0 + s.ct[i][:, None] * xt
    q_lv = s.log_beta_tilde[i][:, None].expand_as(mu)
    kl = _gauss_kl(q_mu, q_lv, mu, lv)
    scale = (0.5 * lv).exp()
    first = i == 0
    dec = DiscretizedNormal(mu, scale, first, fk.levels) if fk.levels else diag_normal(mu, scale)
    return torch.where(first, -dec.log_prob(x0), kl)


def denoising_loss(fk: DDPMDenoiser, x0: torch.Tensor, weighting: str, lamda: float = 0.0):
    """(loss, net output) at one uniformly drawn step per row of x0 (B, n)."""
    s = fk.s
    n = x0.shape[0]
    i = torch.randint(0, s.T, (n,), device=x0.device)
    eps = torch.randn_like(x0)
    xt = q_sample(fk, x0, i, eps)
    out, u = fk.outputs(xt, i)
    loss = ((out - fk.target(x0, eps, i)) ** 2).mean()
    if weighting == "hybrid":
        loss = loss + lamda * s.T * step_term(fk, x0, xt, i, out, u, detach_mean=True).mean() / x0.shape[1]
    return loss, out


def _span(t):
    from gfdsl.lang.source import Span

    return Span(*t) if t else None
