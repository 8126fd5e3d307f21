"""Local search in the target space (Sendera et al. 2024, section 4, arXiv 2402.05098):
terminal states drawn from the replay buffer are moved by Metropolis-adjusted Langevin
steps (MALA; Roberts & Tweedie 1996) towards R(x), and the results go back into the
buffer, from which backward trajectories (P_B) are drawn for training.

One MALA step at step size h, for a target pi(x) = R(x) / Z:
  y = x + h grad log pi(x) + sqrt(2 h) xi,            xi ~ N(0, I)
  log alpha = log pi(y) - log pi(x) + log q(x | y) - log q(y | x),
  q(y | x) = N(y; x + h grad log pi(x), 2 h I)
so the chain leaves pi invariant (detailed balance; tests/test_samplers.py). Between
rounds h is adapted towards the acceptance rate 0.574 (Roberts & Rosenthal 1998), as
the reference implementation does; within a round it is fixed.
"""

from __future__ import annotations

import math

import torch

TARGET_ACCEPT = 0.574


def log_q(y: torch.Tensor, x: torch.Tensor, grad_x: torch.Tensor, h: float) -> torch.Tensor:
    """log N(y; x + h grad_x, 2 h I) without its constant (it cancels in alpha) (B,)."""
    return -(y - x - h * grad_x).pow(2).sum(1) / (4 * h)


@torch.no_grad()
def mala(target, x: torch.Tensor, n_steps: int, h: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """n_steps MALA moves of x (B, n) under log R = target(x): (x, log R(x), acceptance
    rate). A proposal with a non-finite log R or log alpha is rejected."""
    lr, g = target(x), target.grad_log_r(x)
    accepted = torch.zeros((), device=x.device)
    s = math.sqrt(2 * h)
    for _ in range(n_steps):
        y = x + h * g + s * torch.randn_like(x)
        lr_y, g_y = target(y), target.grad_log_r(y)
        log_alpha = lr_y - lr + log_q(x, y, g_y, h) - log_q(y, x, g, h)
        take = (torch.rand_like(lr).log() < log_alpha) & torch.isfinite(log_alpha)  # NaN compares False
        x = torch.where(take[:, None], y, x)
        lr = torch.where(take, lr_y, lr)
        g = torch.where(take[:, None], g_y, g)
        accepted += take.float().mean()
    return x, lr, float(accepted) / max(n_steps, 1)


def adapt(h: float, rate: float, factor: float = 0.1) -> float:
    """The next round's step size: up by `factor` when the chain accepted more than the
    target rate, down otherwise (kept within [1e-6, 10])."""
    h = h * (1 + factor) if rate > TARGET_ACCEPT else h * (1 - factor)
    return min(max(h, 1e-6), 10.0)


def local_search(model, step: int) -> dict | None:
    """A round of local search on the buffer, at 0-based steps that are multiples of
    `local_search_every`: a batch of buffered states (by the buffer's priority) moved by
    `local_search` MALA steps and added back. Returns the round's figures, or None."""
    ls, rp = model.local_search, model.replay
    if ls is None or rp is None or step % ls["every"]:
        return None
    have = int(rp.n)
    if have == 0:
        return None
    x = rp.sample(min(ls["batch"], have), have)
    h = float(rp.ld_step)
    x, lr, rate = mala(model.reward, x, ls["steps"], h)
    rp.add(x, lr)
    rp.ld_step.fill_(adapt(h, rate))
    return {"accept": rate, "ld_step": h}
