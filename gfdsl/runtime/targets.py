"""Targets at run time: log R(x) of terminal states, from a reward or an energy
(log R = -E), with what each knows in closed form -- the exact log Z, exact samples
(for the 2-Wasserstein distance), its modes -- and whether log R is differentiable
in x (the Langevin parametrisation of a sampler's drift reads grad log R).

  hypergrid, hamming_modes, table   discrete spaces (read through the space's index)
  gaussian_mixture                  real vectors: a normalised mixture of isotropic Gaussians
  logistic                          real vectors: log sigmoid(scale * (x[coord] - offset))
  gmm25, funnel, manywell           the diffusion-sampler benchmarks (gfdsl.runtime.energies)

gfdsl.runtime.builtin_targets maps each entry to its class (the registry's `build`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gfdsl.errors import GfdslError, diag
from gfdsl.files import Inputs
from gfdsl.runtime.spaces import Space


class Target(nn.Module):
    """log R(x) (B,) for terminal states x (B, n)."""

    log_z: float | None = None  # the exact log partition function, where known
    can_sample = False  # exact samples of R / Z
    differentiable = False  # grad log R(x) exists (real states)

    def centres(self) -> torch.Tensor | None:
        """Centres of the target's modes (K, n), for mode coverage; None if it has none."""
        return None

    def grad_log_r(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log R(x) (B, n), detached: by autograd unless a target knows it in
        closed form (a Langevin-parametrised drift reads it at every step)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            return torch.autograd.grad(self(xg).sum(), xg)[0]


class Adapted(Target):
    """A plugin's log R module that is not a Target: the Target defaults around it (no
    exact log Z or samples unless it has them; grad log R by autograd for real states)."""

    def __init__(self, inner: nn.Module, real: bool):
        super().__init__()
        self.inner = inner
        self.log_z = getattr(inner, "log_z", None)
        self.can_sample = callable(getattr(inner, "sample", None))
        self.differentiable = bool(getattr(inner, "differentiable", real))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def sample(self, n: int) -> torch.Tensor:
        return self.inner.sample(n)


class DiscreteReward(Target):
    """log R(s) (B,), clipped from below at log_min."""

    def __init__(self, entry: str, args: dict, space: Space, inputs: Inputs | None = None):
        super().__init__()
        self.entry, self.space, self.log_min = entry, space, float(args["log_min"])
        self.args = dict(args)
        if entry == "hamming_modes":
            g = torch.Generator().manual_seed(int(args["seed"]))
            hi = space.V if space.dtype == "seq" else 2
            self.register_buffer("modes", torch.randint(0, hi, (int(args["n"]), space.n), generator=g),
                                 persistent=False)
        if entry == "table":
            self.register_buffer("table", _load_table(args, space, inputs or Inputs.beside(None)), persistent=False)

    # spaces up to this many states keep log R of every state, read by index (a hypergrid
    # reward is a dozen float64 operations per call, a lookup two)
    DENSE = 1 << 20

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        sp = self.space
        if sp.n_states <= self.DENSE:
            dense = getattr(self, "_dense", None)
            if dense is None or dense.device != s.device:
                dense = self._dense = self.log_reward(sp.enumerate(s.device))
            return dense[sp.index(s)]
        return self.log_reward(s)

    def log_reward(self, s: torch.Tensor) -> torch.Tensor:
        """log R(s) (B,) from its definition, clipped at log_min."""
        sp = self.space
        if self.entry == "hypergrid":
            a = self.args
            eps = 1e-12  # as in the reference implementations: no state sits on a boundary
            ax = ((s - sp.lo).double() / (sp.hi - sp.lo) - 0.5).abs()
            r = a["r0"] + a["r1"] * (ax > 0.25 + eps).all(1).double() \
                + a["r2"] * ((ax > 0.3 + eps) & (ax < 0.4 - eps)).all(1).double()
            lr = r.log()
        elif self.entry == "hamming_modes":
            d = (s[:, None, :] != self.modes[None, :, :]).sum(2).amin(1)  # (B,) nearest mode
            lr = -self.args["beta"] * d.double() / sp.n
        else:
            lr = self.table[sp.index(s)]
        return lr.clamp(min=self.log_min).float()


def _load_table(args, space: Space, inputs: Inputs) -> torch.Tensor:
    from gfdsl.runtime.datafiles import read_array

    path = inputs.resolve(args["file"])

    def bad(why):
        return GfdslError([diag("E801", None, None, path=str(path), why=why)])

    a = read_array(path)
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.shape[0] != space.n_states:
        raise bad(f"it holds {a.shape[0]} values, but the action space has {space.n_states} states (a table "
                  "holds one reward per state, in the order `gfdsl compile --dump ir` lists them)")
    if args["log"]:
        if np.isnan(a).any() or np.isposinf(a).any():
            raise bad("log-rewards must be finite or -inf")
        if np.isneginf(a).all():
            raise bad("every log-reward is -inf (R = 0 everywhere): R / Z is undefined")
        return torch.from_numpy(a)
    if (a < 0).any() or not np.isfinite(a).all():
        raise bad("rewards must be finite and >= 0")
    if not (a > 0).any():
        raise bad("every reward is 0: R / Z is undefined")
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(a))




class GaussianMixture(Target):
    """E(x) = -log sum_k w_k N(x; mu_k, s_k^2 I): log R is the mixture's log-density,
    so log Z = log sum_k w_k (0 for equal weights, normalised), exact samples are a
    component drawn by weight plus Gaussian noise, and the modes are the means."""

    can_sample = True
    differentiable = True

    def __init__(self, args: dict):
        super().__init__()
        mu = torch.tensor(args["means"], dtype=torch.float64)  # (K, D)
        K, D = mu.shape
        s = torch.tensor(args["scales"] * (K if len(args["scales"]) == 1 else 1), dtype=torch.float64)  # (K,)
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if args["weights"] is None else \
            torch.tensor(args["weights"], dtype=torch.float64)
        self.log_z = float(w.sum().log())
        self.register_buffer("mu", mu.float(), persistent=False)
        self.register_buffer("inv_var", (1 / s ** 2).float(), persistent=False)
        self.register_buffer("scale", s.float(), persistent=False)
        # log w_k - D/2 log(2 pi s_k^2): each component's constant (K,)
        self.register_buffer("const", (w.log() - 0.5 * D * torch.log(2 * math.pi * s ** 2)).float(), persistent=False)
        self.register_buffer("w", (w / w.sum()).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d2 = (x[:, None, :] - self.mu[None]).pow(2).sum(-1)  # (B, K) squared distances
        return torch.logsumexp(self.const - 0.5 * d2 * self.inv_var, 1)

    def grad_log_r(self, x: torch.Tensor) -> torch.Tensor:
        """sum_k p(k | x) (mu_k - x) / s_k^2 (B, D), in closed form: one (B, K) softmax
        instead of a graph and its backward pass."""
        with torch.no_grad():
            d2 = (x[:, None, :] - self.mu[None]).pow(2).sum(-1)  # (B, K)
            p = torch.softmax(self.const - 0.5 * d2 * self.inv_var, 1) * self.inv_var  # (B, K)
            return p @ self.mu - p.sum(1, keepdim=True) * x

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        k = torch.multinomial(self.w, n, replacement=True)
        return self.mu[k] + self.scale[k, None] * torch.randn(n, self.mu.shape[1], device=self.mu.device)

    def centres(self) -> torch.Tensor:
        return self.mu


class Logistic(Target):
    """R(x) = sigmoid(scale * (x[coord] - offset)): a soft half-space (a posterior's tilt)."""

    differentiable = True

    def __init__(self, args: dict):
        super().__init__()
        self.coord, self.k, self.offset = int(args["coord"]), float(args["scale"]), float(args["offset"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.logsigmoid(self.k * (x[:, self.coord] - self.offset))

