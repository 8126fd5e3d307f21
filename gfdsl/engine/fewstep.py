"""Sampling a DDPM chain in fewer steps than it was trained with: `gfdsl sample RUN
--steps S [--eta E]`.

S positions tau_1 < ... < tau_S, evenly spaced over 1..T and always ending at T, form
a shorter chain with abar'_k = abar_{tau_k}, abar'_0 = 1 and betas beta'_k = 1 -
abar'_k / abar'_{k-1} (the respacing of Nichol & Dhariwal 2021, sec. 4). The trained
net, read at t = tau_k, gives (x_0-hat, eps-hat) (DDPMDenoiser.predict), and
  strided ancestral (no --eta): x_{k-1} ~ N(c0'_k x_0-hat + ct'_k x_k, sigma'^2_k) with
      the posterior coefficients of the respaced chain and the denoiser's own variance
      rule (beta', beta-tilde' or the learned interpolation) on the respaced betas;
  DDIM (--eta E, Song et al. 2021, eq. 12): x_{k-1} = sqrt(abar'_{k-1}) x_0-hat +
      sqrt(1 - abar'_{k-1} - sigma^2) eps-hat + sigma z, sigma^2 = E^2 beta-tilde'_k;
      E = 0 is deterministic, E = 1 with S = T is the ancestral sampler of a
      beta-tilde model.
beta-tilde'_1 = 0 (the last step is exact given x_0) and is clipped to beta-tilde'_2,
as the trained kernel does. Likelihoods stay those of the full chain: `gfdsl eval` is
unchanged by this.
"""

from __future__ import annotations

import torch

from gfdsl.engine.denoising import ddpm_parts
from gfdsl.runtime.kernels import DiscretizedNormal


def respaced(s, steps: int) -> dict[str, torch.Tensor]:
    """The respaced chain's constants (S,) for schedule s: positions `i` (0-based t - 1,
    ascending) and abar, abar_prev, beta, beta_tilde (clipped at the first)."""
    i = (torch.linspace(0, s.T - 1, steps, device=s.abar.device).round().long().unique() if steps > 1
         else torch.full((1,), s.T - 1, dtype=torch.long, device=s.abar.device))
    abar = s.abar[i].double()
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1 - abar / prev
    bt = beta * (1 - prev) / (1 - abar)
    bt = torch.cat([bt[1:2], bt[1:]]) if len(bt) > 1 else beta
    return {"i": i, "abar": abar.float(), "prev": prev.float(), "beta": beta.float(), "beta_tilde": bt.float()}


def _log_var(fk, c: dict, k: int, u):
    lb, lbt = c["beta"][k].log(), c["beta_tilde"][k].log()
    if fk.variance == "beta":
        return lb
    if fk.variance == "beta_tilde":
        return lbt
    f = (u + 1) / 2
    return f * lb + (1 - f) * lbt


@torch.no_grad()
def few_step_sample(model, n: int, steps: int | None, eta: float | None = None) -> torch.Tensor:
    """n samples (n, numel) of a DDPM model by the respaced chain (module docstring);
    steps None: all T."""
    fk, _ = ddpm_parts(model)
    c = respaced(fk.s, steps or fk.s.T)
    x, _ = model.space.source_sample(n)
    for k in range(len(c["i"]) - 1, -1, -1):
        i = c["i"][k].expand(n)
        out, u = fk.outputs(x, i)
        x0, eps = fk.predict(x, i, out)
        abar, prev = c["abar"][k], c["prev"][k]
        if eta is None:
            beta = c["beta"][k]
            mu = (prev.sqrt() * beta / (1 - abar)) * x0 + ((1 - beta).sqrt() * (1 - prev) / (1 - abar)) * x
            lv = _log_var(fk, c, k, u)
        else:
            var = eta**2 * c["beta_tilde"][k]
            mu = prev.sqrt() * x0 + (1 - prev - var).clamp_min(0).sqrt() * eps
            lv = var.log() if eta > 0 else None
        scale = (0.5 * lv).exp() * torch.ones_like(mu) if lv is not None else torch.zeros_like(mu)
        if fk.levels and k == 0 and fk.decode_pos is not None:  # the discretised decoder's grid
            x = DiscretizedNormal(mu, scale, i == fk.decode_pos, fk.levels).sample()
        else:
            x = mu + scale * torch.randn_like(mu)
    return x
