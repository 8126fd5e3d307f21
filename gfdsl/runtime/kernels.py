"""Run-time kernels: the policies P_F and P_B of one step, and the source priors.

States are flat tensors: (B, n) float for real and binary states, (B, n) long for
categorical ones, (B, j) for a prefix of length j. A kernel is called with the state it
reads `x`, the 0-based step position `i` (B,) long (t = i + 1 is the step's index fed to
time-embedded nets) and optional context `ctx` (B, c), and returns a
`torch.distributions.Distribution` whose `log_prob` is (B,). Bijections (runtime/flows.py)
instead map states and return log|det J|.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal

from gfdsl.runtime.nets import shared_step, zero_output
from gfdsl.runtime.schedules import Schedule


def _t(i: torch.Tensor) -> torch.Tensor:
    """The net's step input i + 1 (B,); a batch at one step (a stride-0 view, Chain._pos)
    stays one, so the net computes that step's embedding once."""
    if shared_step(i):
        return (i[:1] + 1).float().expand(i.shape[0])
    return (i + 1).float()


def _in(x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
    return x if ctx is None else torch.cat([x, ctx], dim=1)


class DiagNormal(Distribution):
    """N(loc, diag(scale^2)) over the last axis, log_prob summed over it (B,): what
    Independent(Normal(loc, scale), 1) computes, in a few tensor ops instead of a
    dozen -- a rollout builds one per step. scale: a tensor like loc, or one float for
    every coordinate (then log_prob's normaliser is a constant)."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor | float):
        self.loc, self.scale = loc, scale
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.loc + self.scale * torch.randn(tuple(sample_shape) + tuple(self.loc.shape),
                                                   dtype=self.loc.dtype, device=self.loc.device)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        d = value.shape[-1]
        if isinstance(self.scale, float):
            sq = (value - self.loc).pow(2).sum(-1)
            return sq * (-0.5 / self.scale ** 2) - d * (math.log(self.scale) + 0.5 * LOG_2PI)
        z = (value - self.loc) / self.scale
        return -0.5 * z.pow(2).sum(-1) - self.scale.log().sum(-1) - 0.5 * d * LOG_2PI


LOG_2PI = math.log(2 * math.pi)


def diag_normal(mu: torch.Tensor, scale: torch.Tensor | float) -> Distribution:
    return DiagNormal(mu, scale)


class Kernel(nn.Module):
    bijective = False
    deterministic = False
    learned = True
    in_classes = 0  # K where the state the kernel reads is cat(K): it reaches the net one-hot (set by lowering)

    def _in(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        """The net's input: the state read (one-hot (B, n * K) when categorical), then the
        context states (already encoded by the chain)."""
        if self.in_classes:
            x = nn.functional.one_hot(x.long(), self.in_classes).flatten(1).float()
        return _in(x, ctx)

    def dist(self, x, i, ctx=None) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def exploration_scale(self, explore: float, i: torch.Tensor):
        """The standard deviation an exploring rollout adds to this kernel's Gaussian (in
        quadrature): `explore` itself, or per unit of time for an SDE step."""
        return explore


class Gaussian(Kernel):
    """N(mu, sigma^2 I), mu and log sigma^2 (or mu alone, with a fixed std) from a net."""

    def __init__(self, net: nn.Module, std: float | None, min_std: float):
        super().__init__()
        self.net, self.std, self.min_std = net, std, min_std

    def dist(self, x, i, ctx=None):
        out = self.net(self._in(x, ctx), _t(i))
        if self.std is not None:
            return diag_normal(out, torch.full_like(out, self.std))
        mu, log_var = out.chunk(2, dim=1)
        return diag_normal(mu, (0.5 * log_var).exp().clamp_min(self.min_std))


class BernoulliK(Kernel):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def dist(self, x, i, ctx=None):
        return Independent(Bernoulli(logits=self.net(self._in(x, ctx), _t(i))), 1)


class CategoricalK(Kernel):
    def __init__(self, net: nn.Module, classes: int):
        super().__init__()
        self.net, self.k = net, classes

    def dist(self, x, i, ctx=None):
        logits = self.net(self._in(x, ctx), _t(i))
        B = logits.shape[0]
        return Independent(Categorical(logits=logits.view(B, self.k, -1).transpose(1, 2)), 1)


class DiscretizedNormal(Distribution):
    """Per-row choice between N(mu, scale^2 I) and its discretisation onto L evenly spaced
    values in [-1, 1] (Ho et al. 2020, eq. 13): the mass of each value is the Gaussian's
    mass on its bin, the outermost bins reaching to -inf and +inf, so log_prob is a log
    probability (not a density) on rows where `disc` (B,) is true. mu, scale: (B, n).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, mu: torch.Tensor, scale: torch.Tensor, disc: torch.Tensor, levels: int):
        self.mu, self.scale, self.disc, self.L = mu, scale, disc, levels
        super().__init__(mu.shape[:1], validate_args=False)

    def snap(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest grid value of each entry (the grid is -1 + 2k / (L - 1), k = 0..L-1)."""
        k = torch.round((x + 1) * (self.L - 1) / 2).clamp(0, self.L - 1)
        return k * (2 / (self.L - 1)) - 1

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()):
        y = self.mu + self.scale * torch.randn_like(self.mu)
        return torch.where(self.disc[:, None], self.snap(y), y)

    def log_prob(self, value):
        gauss = Normal(self.mu, self.scale).log_prob(value).sum(1)
        h = 1.0 / (self.L - 1)  # half a bin
        a = (value - h - self.mu) / self.scale  # (B, n) standardised lower bin edge
        b = (value + h - self.mu) / self.scale
        # log(Phi(b) - Phi(a)) on the side of 0 where both tails are small (no cancellation)
        flip = a > 0
        lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
        l_hi, l_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
        mid = l_hi + torch.log(-torch.expm1((l_lo - l_hi).clamp_max(-1e-12)))
        k = torch.round((value + 1) / (2 * h))
        lp = torch.where(k <= 0, torch.special.log_ndtr(b),
                         torch.where(k >= self.L - 1, torch.special.log_ndtr(-a), mid)).sum(1)
        return torch.where(self.disc, lp, gauss)


class DDPMDenoiser(Kernel):
    """p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) (Ho et al. 2020, eq. 11); with
    `levels` L, the step into the data state (position `decode_pos`, set by lowering) is
    that Gaussian discretised onto L values in [-1, 1] (eq. 13), so the likelihood of
    discrete data (images) is a probability and converts to bits per dimension.

    The net predicts eps, x_0 or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans &
    Ho 2022, sec. 4); `predict` turns any of them into (x_0-hat, eps-hat) through
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. With variance "learned" the net has
    n more outputs u, and log sigma_t^2 = f log beta_t + (1 - f) log beta-tilde_t with
    f = (u + 1) / 2 (Nichol & Dhariwal 2021, eq. 15).
    """

    def __init__(self, net: nn.Module, sched: Schedule, param: str, variance: str, levels: int = 0):
        super().__init__()
        self.net, self.s, self.param, self.variance, self.levels = net, sched, param, variance, levels
        self.decode_pos: int | None = None

    def outputs(self, x, i, ctx=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The net's prediction (B, n) (eps, x_0 or v) and, with a learned variance, its
        interpolation output u (B, n); else None."""
        out = self.net(self._in(x, ctx), _t(i))
        if self.variance != "learned":
            return out, None
        return out.chunk(2, dim=1)

    def target(self, x0, eps, i) -> torch.Tensor:
        """What the net should predict for x_t = sqrt(abar) x0 + sqrt(1 - abar) eps."""
        if self.param == "eps":
            return eps
        if self.param == "x0":
            return x0
        s = self.s
        return s.sqrt_abar[i][:, None] * eps - s.sqrt_1m_abar[i][:, None] * x0

    def predict(self, x, i, out) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0-hat, eps-hat) (B, n) from the net's prediction `out` at x = x_t."""
        s = self.s
        a, b = s.sqrt_abar[i][:, None], s.sqrt_1m_abar[i][:, None]
        if self.param == "eps":
            return (x - b * out) / a, out
        if self.param == "x0":
            return out, (x - a * out) / b
        return a * x - b * out, b * x + a * out  # v: (a^2 + b^2 = 1)

    def _mean(self, x, i, out):
        s = self.s
        if self.param == "eps":  # Ho et al. eq. 11 (kept in this form: bit-identical runs)
            return (x - s.eps_coef[i][:, None] * out) * s.inv_sqrt_alpha[i][:, None]
        x0 = out if self.param == "x0" else self.predict(x, i, out)[0]
        return s.c0[i][:, None] * x0 + s.ct[i][:, None] * x

    def mean(self, x, i, ctx=None):
        return self._mean(x, i, self.outputs(x, i, ctx)[0])

    def log_var(self, i, u=None):
        """log sigma_t^2: (B,) for a fixed variance, (B, n) for a learned one."""
        if self.variance == "beta":
            return self.s.log_beta[i]
        if self.variance == "beta_tilde":
            return self.s.log_beta_tilde[i]
        f = (u + 1) / 2
        return f * self.s.log_beta[i][:, None] + (1 - f) * self.s.log_beta_tilde[i][:, None]

    def dist(self, x, i, ctx=None):
        out, u = self.outputs(x, i, ctx)
        mu = self._mean(x, i, out)
        lv = self.log_var(i, u)
        scale = (0.5 * lv).exp()
        scale = scale.expand_as(mu) if u is not None else scale[:, None].expand_as(mu)
        if self.levels and self.decode_pos is not None:
            return DiscretizedNormal(mu, scale, i == self.decode_pos, self.levels)
        return diag_normal(mu, scale)


class DDPMNoising(Kernel):
    """q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I); fixed."""

    learned = False

    def __init__(self, sched: Schedule):
        super().__init__()
        self.s = sched

    def dist(self, x, i, ctx=None):
        s = self.s
        mu = s.sqrt_alpha[i][:, None] * x
        return diag_normal(mu, s.beta[i].sqrt()[:, None].expand_as(mu))

    def marginal(self, x0, i):
        """q(x_t | x_0) for step position i (t = i + 1)."""
        s = self.s
        mu = s.sqrt_abar[i][:, None] * x0
        return diag_normal(mu, s.sqrt_1m_abar[i][:, None].expand_as(mu))


class LearnedNoising(Kernel):
    """The noising kernel plus learned corrections: mean sqrt(alpha_t) x + d_mu, log-variance
    log beta_t + c tanh(d_lv / c) with c = max_log_var_shift. The net's last layer starts
    at zero, so training starts from the fixed noising process (MLE-GFN, Zhang et al.)."""

    def __init__(self, sched: Schedule, net: nn.Module, max_shift: float):
        super().__init__()
        self.s, self.net, self.c = sched, net, max_shift
        zero_output(net)

    def dist(self, x, i, ctx=None):
        s = self.s
        d_mu, d_lv = self.net(x, _t(i)).chunk(2, dim=1)
        mu = s.sqrt_alpha[i][:, None] * x + d_mu
        log_var = s.log_beta[i][:, None] + self.c * torch.tanh(d_lv / self.c)
        return diag_normal(mu, (0.5 * log_var).exp())


class Appended(Distribution):
    """Distribution over prefix + one token: samples extend the prefix, log_prob reads the
    last token of an extended prefix."""

    arg_constraints: dict = {}

    def __init__(self, prefix: torch.Tensor, token: Distribution, binary: bool):
        self.prefix, self.token, self.binary = prefix, token, binary
        super().__init__(batch_shape=prefix.shape[:1], validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        tok = self.token.sample()
        tok = tok.to(self.prefix.dtype)
        return torch.cat([self.prefix, tok[:, None]], dim=1)

    def log_prob(self, value):
        return self.token.log_prob(value[:, -1].long())


class NextToken(Kernel):
    """P_F(x[:j+1] | x[:j]) = softmax(net(pad(x[:j])))[position j]. With an autoregressive
    net (MADE, transformer) the logits at position j see only the first j tokens, so the
    padding never leaks."""

    def __init__(self, net: nn.Module, classes: int, length: int, binary: bool, autoregressive: bool):
        super().__init__()
        self.net, self.k, self.L, self.binary = net, classes, length, binary
        # with an autoregressive net (outputs see only earlier inputs) and no step input, the logits
        # of every position come from one call on the full sequence
        self.all_positions = autoregressive and getattr(net, "embed", None) is None

    def log_probs_all(self, x_full):
        """log P_F of each token given its prefix, (L, B), from one net call."""
        B = x_full.shape[0]
        logits = self.net(x_full.float()).view(B, self.k, self.L)
        lp = torch.log_softmax(logits, dim=1).gather(1, x_full.long()[:, None, :])[:, 0]  # (B, L)
        return lp.t()

    def logits_all(self, x_full, i):
        B = x_full.shape[0]
        return self.net(x_full.float(), _t(i)).view(B, self.k, self.L)  # (B, K, L)

    def dist(self, x, i, ctx=None):
        B, j = x.shape
        pad = torch.nn.functional.pad(x.float(), (0, self.L - j))
        logits = self.logits_all(pad, i)[:, :, j]  # (B, K)
        return Appended(x, Categorical(logits=logits), self.binary)


class Dirac(Distribution):
    arg_constraints: dict = {}

    def __init__(self, value: torch.Tensor):
        self.value = value
        super().__init__(batch_shape=value.shape[:1], validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        return self.value

    rsample = sample

    def log_prob(self, value):
        return torch.zeros(value.shape[0], device=value.device)


class Truncate(Kernel):
    """P_B(x[:j] | x[:j+1]) = 1: a prefix has one parent."""

    deterministic = True
    learned = False

    def dist(self, x, i, ctx=None):
        return Dirac(x[:, :-1])


# -- priors of the source ------------------------------------------------------------------


class Prior(nn.Module):
    """The source's distribution: normal, bernoulli, uniform, or a point mass."""

    def __init__(self, entry: str, args: dict, numel: int, dtype: str, classes: int):
        super().__init__()
        self.entry, self.n, self.dtype, self.k = entry, numel, dtype, classes
        self.mean = float(args.get("mean", 0.0))
        self.std = float(args.get("std", 1.0))
        self.p = float(args.get("p", 0.5))
        # follows .to(device); a point mass's value, else a scalar anchor
        self.register_buffer("point", torch.tensor(args.get("value", [0.0]), dtype=torch.float32), persistent=False)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws (n, numel) and their log-probabilities (n,)."""
        if self.entry == "point":
            return self.point.expand(n, self.n).clone(), torch.zeros(n, device=self.point.device)
        d = self.dist(n)
        x = d.sample()
        return x, d.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per row (B,); the Gaussian case in closed form, without building a
        distribution object (it is on every flow's hot path). A point mass scores its
        own value 0 (trajectories start there by construction)."""
        if self.entry == "normal":
            z = (x - self.mean) / self.std
            return -0.5 * (z * z).sum(1) - self.n * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        if self.entry == "point":
            return torch.zeros(x.shape[0], device=x.device)
        return self.dist(x.shape[0]).log_prob(x)

    def dist(self, n: int) -> Distribution:
        dev = self.point.device
        if self.entry == "normal":
            mu = torch.full((n, self.n), self.mean, device=dev)
            return diag_normal(mu, torch.full_like(mu, self.std))
        if self.entry == "bernoulli" or (self.entry == "uniform" and self.dtype == "binary"):
            p = self.p if self.entry == "bernoulli" else 0.5
            return Independent(Bernoulli(probs=torch.full((n, self.n), p, device=dev)), 1)
        return Independent(Categorical(logits=torch.zeros(n, self.n, self.k, device=dev)), 1)


class DataSource(nn.Module):
    """A source drawn from a data set's examples (a bridge between two data sets). It
    has no density: likelihood terms are refused by the checker; log_prob is 0."""

    density = False

    def __init__(self, data: torch.Tensor):
        super().__init__()
        self.register_buffer("data", data, persistent=False)  # (N, n), rebuilt from the spec

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.randint(0, self.data.shape[0], (n,), device=self.data.device)
        return self.data[i], torch.zeros(n, device=self.data.device)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], device=x.device)
