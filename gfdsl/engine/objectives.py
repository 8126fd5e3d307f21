"""Objectives: pure functions of trajectories, composed as a weighted sum, written once
against GfnModel's rollout API -- tb is the same function for the hypergrid and for a
diffusion sampler.

Data terms, on backward trajectories from data points x (log P_B detached unless said):
  elbo(weighting, train)  -E_{P_B(tau|x)}[log P_F(tau) - log P_B(tau|x)]; "simple" (Ho et
                          al.'s L_simple) and "hybrid" (Nichol & Dhariwal's L_simple +
                          lamda L_vlb) at one uniformly drawn step (gfdsl.engine.denoising)
  mle                     -log p(x), exact: each x has one trajectory
  tbc(k, train, form)     trajectory-balance consistency (MLE-GFN): a_j = log P_F(tau_j) -
                          log P_B(tau_j|x) of k trajectories of one x must agree
  ipf(rounds)             Schrodinger bridge by iterative proportional fitting (De Bortoli
                          et al. 2021): even rounds fit P_F to backward trajectories from
                          data, odd rounds fit P_B to forward trajectories from the source
  cfm(sigma, coupling)    conditional flow matching of an ode_flow chain's velocity on
                          straight paths from source draws to data (Lipman et al. 2023;
                          Tong et al. 2024; gfdsl.engine.flowmatching)
Balance terms, on trajectories drawn by the behaviour policy (gfdsl.engine.offpolicy):
  tb       (log Z + log P(s_0) + sum log P_F - log R(x) - sum log P_B)^2   Malkin et al. 2022
  vargrad  the batch variance of the same sum without log Z               Richter et al. 2020
  db       (log F(s) + log P_F(s'|s) - log F(s') - log P_B(s|s'))^2, F(x) = R(x) at the end
                                                                           Bengio et al. 2023
  subtb    lamda^(j-i)-weighted balance of every sub-trajectory i..j      Madan et al. 2023
  fm       flow matching on the edge flows of an action space             Bengio et al. 2021
  reverse_kl  E_{P_F}[log P_F(tau) - log P_B(tau|x) - log R(x)] by reparameterised samples
  (pis)                                                                    Zhang & Chen 2022
Posterior (a frozen data-trained prior, Venkatraman et al. 2024, arXiv 2405.20971):
  rtb      (log Z + sum log P_F^post - sum log P_F^prior - log R(x))^2

Values stay on the device: no host sync. Each call records which log-probabilities were
finite in `health` (slots: the prior, P_F and P_B of each step, the target), read by the
training loop only when a step went wrong.
"""

from __future__ import annotations

import torch

from gfdsl.engine import offpolicy
from gfdsl.engine.denoising import denoising_loss, denoising_parts
from gfdsl.engine.flowmatching import cfm_loss, velocity_kernel

DATA = {"elbo", "mle", "tbc", "ipf", "cfm"}


class Objective:
    def __init__(self, model, stages: list[list[dict]], prior_steps: int, source):
        self.stages = [[(float(t["coef"]), t["term"], dict(t["args"]), t["span"]) for t in s] for s in stages]
        self.prior_steps = prior_steps if len(stages) == 2 else 0
        terms = [t for s in self.stages for t in s]
        self.simple = None  # the denoiser that a one-step elbo weighting trains
        self.velocity = None  # the ode_flow kernel that cfm trains
        for _coef, name, args, span in terms:
            if name == "elbo" and args["weighting"] in ("simple", "hybrid"):
                self.simple = denoising_parts(model, args["weighting"], span, source)
            if name == "cfm":
                self.velocity = velocity_kernel(model, span, source)
        self.total_steps = 1  # set by the training loop (ipf needs its round length)
        self.rounds = next((a["rounds"] for _, n, a, _ in terms if n == "ipf"), 1)
        self.k = max([a["k"] for _, n, a, _ in terms if n == "tbc"], default=1)
        # flow matching reads edge flows, not log P_F / log P_B of the actions taken
        self.scores = {n for _, n, _, _ in self.stages[-1]} != {"fm"}
        self.slots = model.health_slots
        self.health = torch.ones(self.slots["size"], dtype=torch.bool)
        self._ok: dict[str, torch.Tensor] = {}

    @property
    def round_length(self) -> int:
        """Steps per IPF round (the whole run without ipf); the training loop's cosine decay
        restarts on the same boundaries."""
        return max(1, self.total_steps // self.rounds)

    def stage(self, step: int) -> int:
        """0-based training step -> which stage's terms apply (a posterior's prior first)."""
        return 0 if step < self.prior_steps else len(self.stages) - 1

    def __call__(self, model, x: torch.Tensor, step: int):
        """(loss, {term: value}) on a batch (data rows, or B empty rows for a reward)."""
        total = None
        vals: dict[str, torch.Tensor] = {}
        shared: dict = {}  # rollouts shared by the terms that agree on what they need
        self._ok: dict[str, torch.Tensor] = {}
        for coef, name, args, _ in self.stages[self.stage(step)]:
            v = (self._data(model, name, args, x, step, shared) if name in DATA else
                 _rtb(self, model, x, step) if name == "rtb" else
                 self._balance(model, name, args, x.shape[0], step, shared))
            vals[name] = v.detach()
            v = v if coef == 1.0 else coef * v
            total = v if total is None else total + v
        self.health = self._health(x.device)
        return total, vals

    # -- data terms ---------------------------------------------------------------------------

    def _data(self, model, name, args, x, step, shared):
        if name == "elbo" and args["weighting"] in ("simple", "hybrid"):
            loss, out = denoising_loss(self.simple, x, args["weighting"], args["lamda"])
            # every step shares the denoiser: its health stands for all forward entries
            self._mark("pf", torch.isfinite(out).all())
            return loss
        if name == "cfm":
            x0, _ = model.space.source_sample(x.shape[0])
            loss, out = cfm_loss(self.velocity, x0, x, args["sigma"], args["coupling"])
            self._mark("pf", torch.isfinite(out).all())
            return loss
        if name == "ipf":
            return self._ipf(model, x, step)
        if name == "elbo" and args["train"] == "both":
            t = model.infer(x, 1, rsample=True)
            self.check(t.log_pf, t.log_pb, t.log_prior)
            return mle(t)  # -log weight, reparameterised through P_B's samples
        if "data" not in shared:
            shared["data"] = t = model.infer(x, self.k)  # shared by elbo(train = "pf"), mle and tbc
            self.check(t.log_pf, t.log_pb, t.log_prior)
        t = shared["data"]
        if name == "elbo":
            return elbo(t)
        if name == "mle":
            return mle(t)
        return tbc(t, args, x.shape[0])

    def _ipf(self, model, x, step):
        chain = model.space
        if (step // self.round_length) % 2 == 0:  # fit P_F: maximise log P_F on backward trajectories from data
            with torch.no_grad():
                t = model.infer(x)
            t.log_pf = chain.forward_log_probs(t.states, x.shape[0], {})
            self.check(t.log_pf, t.log_pb, t.log_prior)
            return -t.log_pf.sum(0).mean()
        with torch.no_grad():  # fit P_B: maximise log P_B on forward trajectories from the source
            t = chain.forward(x.shape[0])
        t.log_pb = chain.backward_log_probs(t.states, x.shape[0])
        self.check(None, t.log_pb, t.log_prior)
        return -t.log_pb.sum(0).mean()

    # -- balance terms ------------------------------------------------------------------------

    def _balance(self, model, name, args, B, step, shared):
        if name in ("reverse_kl", "pis"):  # one objective, two names
            return _reverse_kl(self, model, B)
        if "balance" not in shared:
            t = offpolicy.draw(model, B, step, score=self.scores)
            lpf, lpb = model.space.log_probs(t) if self.scores else (None, None)
            log_r = model.log_reward(t.terminal)
            self.check(lpf, lpb, t.log_prior, log_r)
            shared["balance"] = (t, lpf, lpb, log_r)
        t, lpf, lpb, log_r = shared["balance"]
        if name == "fm":
            v, ok = model.space.flow_matching(t, log_r)
            self._mark("pf", ok)
            return v
        t.log_pf, t.log_pb = lpf, lpb
        if name in ("db", "subtb"):
            f, node = model.space.log_flows(t, log_r, model.nets[args["flow"]],
                                            model.log_reward if args["forward_looking"] else None)
            return detailed_balance(t, f) if name == "db" else subtrajectory_balance(t, f, node, args["lamda"])
        if name == "tb":
            return trajectory_balance(t, model.log_z(), log_r)
        return vargrad(t, log_r)

    def check(self, lpf=None, lpb=None, log_prior=None, log_r=None) -> None:
        """Record which log-probabilities were finite (device-side; read only on failure):
        per step where a slot has one entry per step, else over the whole tensor."""
        for key, v in (("pf", lpf), ("pb", lpb), ("prior", log_prior), ("target", log_r)):
            sl = self.slots.get(key)
            if v is None or sl is None:
                continue
            ok = v.isfinite()
            self._mark(key, ok.all(1) if ok.dim() == 2 and sl.stop - sl.start == ok.shape[0] else ok.all())

    def _mark(self, key: str, ok: torch.Tensor) -> None:
        self._ok[key] = ok if key not in self._ok else self._ok[key] & ok

    def _health(self, device) -> torch.Tensor:
        """The health vector (slots["size"],) bool from what this call marked (True
        where nothing was read): one stack or cat, no indexed writes."""
        parts = []
        for key in ("prior", "pf", "pb", "target"):
            sl = self.slots.get(key)
            if sl is None:
                continue
            n = sl.stop - sl.start
            ok = self._ok.get(key)
            parts.append(torch.ones((), dtype=torch.bool, device=device) if ok is None else ok)
            if n > 1 and parts[-1].dim() == 0:
                parts[-1] = parts[-1].expand(n)
        if all(p.dim() == 0 for p in parts):
            return torch.stack(parts)
        return torch.cat([p if p.dim() else p[None] for p in parts])


# -- the terms, as pure functions of trajectories (tested against hand computations) --------------


def elbo(t) -> torch.Tensor:
    """-E[log P(s_0) + log P_F(tau) - log P_B(tau|x)] with log P_B detached (trains P_F)."""
    return -(t.log_prior + t.log_pf.sum(0) - t.log_pb.sum(0).detach()).mean()


def mle(t) -> torch.Tensor:
    """-log P_F(tau) + log P_B(tau|x): exact -log p(x) where x has one trajectory."""
    return -t.log_weight().mean()


def tbc(t, args: dict, n: int) -> torch.Tensor:
    """Trajectory-balance consistency of k = args["k"] trajectories of each of n points
    (trajectory-major rows): pairwise (a_1 - a_2)^2, or k * Var_j(a_j)."""
    fwd = t.log_prior + t.log_pf.sum(0)
    if args["train"] == "pb":
        fwd = fwd.detach()
    a = (fwd - t.log_pb.sum(0)).view(args["k"], n)
    if args["form"] == "pairwise":
        return ((a[0] - a[1]) ** 2).mean()
    return (args["k"] * a.var(0, unbiased=False)).mean()


def trajectory_balance(t, log_Z: torch.Tensor, log_r: torch.Tensor) -> torch.Tensor:
    """Malkin et al. (2022), eq. 14: mean_b (log Z + log P_F(tau_b) - log R(x_b) - log P_B(tau_b|x_b))^2,
    the source's prior counted in log P_F."""
    z = log_Z + t.log_pf.sum(0) - log_r - t.log_pb.sum(0)
    return (z if t.log_prior is None else z + t.log_prior).pow(2).mean()


def vargrad(t, log_r: torch.Tensor) -> torch.Tensor:
    """Richter et al. (2020): log Z replaced by the batch mean of the other terms."""
    z = t.log_weight() - log_r
    return (z - z.mean()).pow(2).mean()


def detailed_balance(t, f: torch.Tensor) -> torch.Tensor:
    """Bengio et al. (2023): mean over the transitions of (log F(s) + log P_F(s'|s) -
    log F(s') - log P_B(s|s'))^2; f (T + 1, B) the flows, R(x) after the last state."""
    r = f[:-1] + t.log_pf - f[1:] - t.log_pb
    valid = t.valid
    if valid is None:
        return r.pow(2).mean()
    valid = valid.float()
    return (r.pow(2) * valid).sum() / valid.sum()


def subtrajectory_balance(t, f: torch.Tensor, node: torch.Tensor | None, lamda: float) -> torch.Tensor:
    """Madan et al. (2023): every sub-trajectory i..j's balance, weighted by lamda^(j - i),
    averaged per trajectory; node (T + 1, B) the positions that are nodes (None: all)."""
    lpf, lpb = t.log_pf, t.log_pb
    c = torch.cat([torch.zeros_like(lpf[:1]), (lpf - lpb).cumsum(0)])  # (T + 1, B)
    r = f[:, None] - f[None, :] + c[None, :] - c[:, None]  # (i, j, B): balance of i..j
    n = f.shape[0]
    i = torch.arange(n, device=f.device)
    gap = (i[None, :] - i[:, None]).float()  # j - i
    pair = (gap > 0)[..., None] if node is None else (gap > 0)[..., None] & node[None, :, :]  # i < j, j a node
    w = torch.where(pair, lamda ** gap[..., None], 0.0)
    return ((w * r.pow(2)).sum((0, 1)) / w.sum((0, 1))).mean()


def reverse_kl(t, log_r: torch.Tensor) -> torch.Tensor:
    """KL(P_F(tau) || P_B(tau|x) R(x) / Z) up to the constant log Z, for forward
    trajectories drawn with reparameterised samples (Zhang & Chen 2022, PIS)."""
    return (t.log_weight() - log_r).mean()


def relative_tb(log_Z, lpf: torch.Tensor, lpf_prior: torch.Tensor, log_r: torch.Tensor) -> torch.Tensor:
    """Venkatraman et al. (2024): (log Z + sum log P_F^post - sum log P_F^prior - log R(x))^2."""
    return (log_Z + lpf.sum(0) - lpf_prior.sum(0) - log_r).pow(2).mean()


def _reverse_kl(obj, model, B):
    t = model.space.forward(B, score=True, rsample=True)
    t.log_pf, t.log_pb = model.space.log_probs(t)
    log_r = model.log_reward(t.terminal)
    obj.check(t.log_pf, t.log_pb, t.log_prior, log_r)
    return reverse_kl(t, log_r)


def _rtb(obj, model, x, step):
    """rtb on trajectories of the posterior P_F (drawn by the behaviour policy, or back
    from data points, scored under P_F with the parameters' graph), against the frozen
    prior's P_F of the same steps and the reward. The source's prior cancels."""
    B = x.shape[0]
    t = offpolicy.draw(model, B, step, score=True, data=x)
    lpf = t.log_pf if t.log_pf is not None else model.space.log_probs(t)[0]
    with torch.no_grad():
        lpf_prior = model.prior_chain.forward_log_probs(t.states, B, {})
    log_r = model.log_reward(t.terminal)
    obj.check(lpf, None, None, log_r)
    return relative_tb(model.log_z(), lpf, lpf_prior, log_r)

