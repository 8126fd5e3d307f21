"""Objectives: pure functions of trajectories, composed as a weighted sum.

  elbo(weighting, train)  -E_{P_B(tau|x)}[log P_F(tau) - log P_B(tau|x)] per example.
                          train "pf": states and log P_B detached; "both": reparameterised.
                          weighting "simple": Ho et al.'s L_simple, ||eps - eps_theta||^2 at
                          one uniformly drawn step, through the noising kernel's closed-form
                          marginal (DDPM structure only).
  mle                     -log p(x), exact: each x has one trajectory.
  tbc(k, train, form)     trajectory-balance consistency (Zhang et al. 2022, MLE-GFN): for
                          k backward trajectories of one x, a_j = log P_F(tau_j) -
                          log P_B(tau_j|x); pairwise (a_1 - a_2)^2, or k * Var_j(a_j).
                          Samples are not reparameterised; train "pb" detaches log P_F.
  ipf(rounds)             Schrodinger bridge by iterative proportional fitting (De Bortoli
                          et al. 2021): even rounds fit P_F to backward trajectories from
                          data (max log P_F), odd rounds fit P_B to forward trajectories from
                          the prior (max log P_B).

Rollouts are shared between terms where their needs agree (e.g. `elbo + tbc(k = 2)` uses
one set of 2 trajectories per point). Values stay on the device: no host sync.
"""

from __future__ import annotations

import torch

from gfdsl.errors import GfdslError, diag
from gfdsl.runtime.kernels import DDPMDenoiser, DDPMNoising

SUPPORTED = {"elbo", "mle", "tbc", "ipf"}


class Objective:
    def __init__(self, model, terms: list[dict], source):
        self.terms = [(float(t["coef"]), t["term"], dict(t["args"]), t["span"]) for t in terms]
        for _, name, _, span in self.terms:
            if name not in SUPPORTED:
                raise GfdslError([diag("E802", source, _span(span),
                                       message=f"objective {name}() has no run-time implementation yet",
                                       hint="use elbo, mle, tbc or ipf; `gfdsl check` accepts the spec")])
        self.simple = None
        for _coef, name, args, span in self.terms:
            if name == "elbo" and args["weighting"] == "simple":
                self.simple = self._simple_parts(model, span, source)
        self.total_steps = 1  # set by the trainer (ipf needs its round length)
        self.rounds = next((a["rounds"] for _, n, a, _ in self.terms if n == "ipf"), 1)
        need_rs = any(n == "elbo" and a["train"] == "both" for _, n, a, _ in self.terms)
        ks = [a["k"] for _, n, a, _ in self.terms if n == "tbc"]
        self.k = max(ks, default=1)
        self.rsample = need_rs

    @property
    def round_length(self) -> int:
        """Steps per IPF round (the whole run without ipf); the trainer's cosine decay
        restarts on the same boundaries."""
        return max(1, self.total_steps // self.rounds)

    @staticmethod
    def _simple_parts(model, span, source):
        steps = model.plan.steps
        f = {s.fwd for s in steps}
        b = {s.bwd for s in steps}
        fk = model.kernels[next(iter(f))] if len(f) == 1 else None
        bk = model.kernels[next(iter(b))] if len(b) == 1 and None not in b else None
        ok = isinstance(fk, DDPMDenoiser) and isinstance(bk, DDPMNoising) and fk.s is bk.s \
            and sorted(s.pos for s in steps) == list(range(len(steps))) and not any(s.ctx for s in steps)
        if not ok:
            raise GfdslError([diag("E802", source, _span(span),
                                   message='elbo(weighting = "simple") needs one ddpm_denoiser() forward and one '
                                           "ddpm_noising() backward kernel sharing a schedule on every step",
                                   hint='use elbo(weighting = "full") for other structures')])
        return fk, bk

    def __call__(self, model, x: torch.Tensor, step: int):
        """(loss, {term: value}); also sets self.health: (1 + 2T,) bool on the device, whether
        the prior, each step's log P_F and each step's log P_B were finite in this call."""
        total = torch.zeros((), device=x.device)
        vals: dict[str, torch.Tensor] = {}
        traj = None
        self.health = torch.ones(1 + 2 * len(model.plan.steps), dtype=torch.bool, device=x.device)
        for coef, name, args, _ in self.terms:
            if name == "elbo" and args["weighting"] == "simple":
                v = self._l_simple(x)
            elif name == "ipf":
                v = self._ipf(model, x, step)
            elif name == "elbo" and args["train"] == "both":
                t = model.infer(x, 1, rsample=True)
                self._check(t)
                v = -t.log_weight().mean()
            else:
                if traj is None:
                    traj = model.infer(x, self.k)  # shared by elbo(train = "pf"), mle and tbc
                    self._check(traj)
                v = self._term(name, args, traj, x.shape[0])
            vals[name] = v.detach()
            total = total + coef * v
        return total, vals

    def _check(self, t) -> None:
        """Record which log-probabilities were finite (device-side; read only on failure)."""
        ok = torch.cat([torch.isfinite(t.log_prior).all()[None], torch.isfinite(t.log_pf).all(1),
                        torch.isfinite(t.log_pb).all(1)])
        self.health = self.health & ok

    def _term(self, name, args, t, n):
        if name in ("elbo", "mle"):
            lp = t.log_prior + t.log_pf.sum(0)
            lb = t.log_pb.sum(0)
            return -(lp - (lb.detach() if name == "elbo" else lb)).mean()
        # tbc
        fwd = t.log_prior + t.log_pf.sum(0)
        if args["train"] == "pb":
            fwd = fwd.detach()
        a = (fwd - t.log_pb.sum(0)).view(args["k"], n)
        if args["form"] == "pairwise":
            return ((a[0] - a[1]) ** 2).mean()
        return (args["k"] * a.var(0, unbiased=False)).mean()

    def _l_simple(self, x0):
        fk, bk = self.simple
        s = fk.s
        n = x0.shape[0]
        i = torch.randint(0, s.T, (n,), device=x0.device)
        eps = torch.randn_like(x0)
        xt = s.sqrt_abar[i][:, None] * x0 + s.sqrt_1m_abar[i][:, None] * eps
        out = fk.eps_pred(xt, i)
        T = s.T
        # every step shares the denoiser: its health stands for all forward entries
        self.health[1:1 + T] &= torch.isfinite(out).all()
        target = eps if fk.param == "eps" else x0
        return ((out - target) ** 2).mean()

    def _ipf(self, model, x, step):
        if (step // self.round_length) % 2 == 0:  # fit P_F: maximise log P_F on backward trajectories from data
            with torch.no_grad():
                t = model.infer(x)
            t.log_pf = model._forward_log_probs(t.states, x.shape[0], {})
            self._check(t)
            return -t.log_pf.sum(0).mean()
        with torch.no_grad():  # fit P_B: maximise log P_B on forward trajectories from the prior
            t = model.sample(x.shape[0])
        t.log_pb = model._backward_log_probs(t.states, x.shape[0])
        self._check(t)
        return -t.log_pb.sum(0).mean()


# -- reward-driven terms -----------------------------------------------------------------
# Pure functions of a (data-model) trajectory and a log-reward, tested against hand-computed
# values. A data-trained model has no reward, so the checker refuses `tb` and `reverse_kl`
# there (E611); reward-driven specs lower to gfdsl.reward_model, which has its own tb.


def trajectory_balance(t, log_Z: torch.Tensor, log_reward: torch.Tensor) -> torch.Tensor:
    """Malkin et al. (2022), eq. 14: mean_b (log Z + log P_F(tau_b) - log R(x_b) - log P_B(tau_b|x_b))^2,
    with the source prior counted in log P_F. t: Trajectory; log_Z: (); log_reward: (B,)."""
    return ((log_Z + t.log_weight() - log_reward) ** 2).mean()


def reverse_kl(t, log_reward: torch.Tensor) -> torch.Tensor:
    """KL(P_F(tau) || P_B(tau|x) R(x) / Z) up to the constant log Z, for forward trajectories
    t ~ P_F drawn with reparameterised samples: mean_b log P_F(tau_b) - log P_B(tau_b|x_b) - log R(x_b)."""
    return (t.log_weight() - log_reward).mean()


def _span(t):
    from gfdsl.lang.source import Span

    return Span(*t) if t else None
