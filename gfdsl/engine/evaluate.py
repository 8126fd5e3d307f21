"""Evaluation of a trained model, by what its target allows.

Data (likelihood): the test NLL, exact where each x has one trajectory, else the
importance-weighted bound with k backward trajectories (Burda et al. 2016); bits per
dimension for discrete images. A bridge from a data set has no source density: it is
scored by the sliced 2-Wasserstein distance of its samples to the test data.

Reward (balance), on n forward trajectories tau ~ P_F with log-weights
w = log R(x) + log P_B(tau | x) - log P(s_0) - log P_F(tau):
  log_z_elbo = mean(w) (a lower bound on log Z), log_z_iw = logsumexp(w) - log n,
  and where the target knows log Z: delta_log_z = log Z - log_z_elbo, delta_log_z_rw =
  log Z - log_z_iw; on enumerable spaces the exact terminating distribution against
  R / Z (exact L1); where the target draws exact samples, the 2-Wasserstein distance to
  as many exact samples (an exact assignment) and the evidence upper bound `eubo` (the
  mean of w on backward trajectories from exact samples; `elbo` <= log Z <= `eubo`);
  for mixtures, the samples per mode.
A posterior's log-weights read its frozen prior instead of P_B and the source:
w = log R(x) + log P_F^prior(tau) - log P_F(tau), so log_z_* estimate log of
Z = E_prior[R(x)].
"""

from __future__ import annotations

import math

import numpy as np
import torch

W2_MAX = 2000  # samples in the exact 2-Wasserstein assignment (a 2000 x 2000 cost matrix, 32 MB)


def likelihood(model, test: torch.Tensor, k: int, n: int | None, seed: int) -> dict:
    torch.manual_seed(seed + 1)
    x = test if n is None else test[:n]
    ll = model.log_likelihood(x.to(model.device), k=k)
    nll = float(-ll.mean())
    out = {"test_nll_nats": nll, "n_eval": int(x.shape[0]), "nll_estimator": estimator(model, k)}
    # bits per dimension only where the likelihood is a probability of discrete pixels: binary
    # or categorical data, or real data scored through a discretised decoder
    kernels = getattr(model.space, "kernels", {}).values()
    discrete = model.data_dtype in ("binary", "cat") or any(getattr(kk, "levels", 0) for kk in kernels)
    if discrete and model.data_shape and int(np.prod(model.data_shape)) >= 16 and model.spec["dataset"]["entry"] == "digits":
        out["test_bpd"] = nll / (int(np.prod(model.data_shape)) * math.log(2))
    return out


def estimator(model, k: int) -> dict:
    """How log p(x) was computed: exactly (one trajectory per point), by the ODE of a
    continuous-time flow (its solver and steps; the divergence exact or Hutchinson's), or
    by IWAE with k backward trajectories."""
    if not model.exact:
        return {"name": "iwae", "k": k}
    ode = [kk for kk in getattr(model.space, "kernels", {}).values() if getattr(kk, "velocity_field", False)]
    if ode:
        return {"name": "ode", "solver": ode[0].solver, "steps": len(model.space.plan.steps), "trace": ode[0].trace}
    return {"name": "exact"}


def estimator_label(est: dict) -> str:
    """The estimator in words: "exact", "ODE rk4 x 20, exact trace", "IWAE k=100"."""
    if est["name"] == "ode":
        return f"ODE {est['solver']} x {est['steps']}, {est['trace']} trace"
    return "exact" if est["name"] == "exact" else f"IWAE k={est['k']}"


def evaluate(model, test: torch.Tensor | None, k: int, n: int | None, seed: int,
             test_y: torch.Tensor | None = None) -> dict:
    """What `gfdsl eval` prints and summary.json holds, for any model."""
    if model.conditions:
        return conditional_metrics(model, test, test_y, k, n, seed)
    if model.reward is not None:
        return reward_metrics(model, seed)
    if model.spec["source_data"] is not None:  # a bridge: no source density
        return bridge_metrics(model, test, seed)
    return likelihood(model, test, k, n, seed)


def conditional_metrics(model, test, test_y, k: int, n: int | None, seed: int) -> dict:
    """The metrics at each point of the conditions' grid (Conditions.grid: every value of
    an int condition, eval_given of a real one) under `conditions`, keyed "y=3", and
    their average beside them: a data model's test NLL weighted by the test examples
    of each value (the conditional NLL of the whole test set), other figures the plain
    mean over the points."""
    from gfdsl.runtime.conditions import label

    conds, per = model.conditions, {}
    labelled = next((nm for nm, c in conds.specs.items() if c["source"] == "labels"), None)
    if test is not None and n is not None:  # n points of the whole test set, then split by value
        test, test_y = test[:n], test_y[:n]
    for point in conds.grid():
        with model.given(conds.fixed(point, 1, model.device)):
            if model.reward is not None:
                per[label(point)] = reward_metrics(model, seed)
                continue
            rows = test[test_y == point[labelled] - conds.specs[labelled]["lo"]]
            if rows.shape[0]:
                per[label(point)] = likelihood(model, rows, k, None, seed)
    out = _average(per, weight="n_eval" if model.reward is None else None)
    out["conditions"] = per
    return out


def _average(per: dict, weight: str | None) -> dict:
    """Means of the scalar figures every point has (weighted by `weight` where given)."""
    if not per:
        return {}
    first = next(iter(per.values()))
    out = {}
    for key, v in first.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not all(
                isinstance(m.get(key), (int, float)) and m.get(key) is not None for m in per.values()):
            if all(m.get(key) == v for m in per.values()) and not isinstance(v, (int, float)):
                out[key] = v  # the same everywhere (the evaluation, the estimator)
            continue
        if key == weight:
            out[key] = int(sum(m[key] for m in per.values()))
        elif all(m[key] == v for m in per.values()):
            out[key] = v  # (a count every point shares)
        else:
            w = [float(m[weight]) if weight else 1.0 for m in per.values()]
            out[key] = sum(m[key] * wi for m, wi in zip(per.values(), w)) / sum(w)
    return out


@torch.no_grad()
def bridge_metrics(model, test: torch.Tensor, seed: int, n: int = 2000) -> dict:
    torch.manual_seed(seed + 1)
    x = model.space.forward(n).terminal.float().cpu().numpy()
    return {"evaluation": "sampled", "sliced_w2": sliced_w2(x, test.cpu().numpy()), "n_samples": n}


@torch.no_grad()
def log_weights(model, t) -> torch.Tensor:
    """log R(x) + log P_B(tau|x) - log P(s_0) - log P_F(tau) (B,), or a posterior's
    log R(x) + log P_F^prior(tau) - log P_F(tau)."""
    log_r = model.log_reward(t.terminal).double()
    if model.prior_chain is not None:
        prior = model.prior_chain.forward_log_probs(t.states, t.batch, {})
        return log_r + prior.sum(0).double() - t.log_pf.sum(0).double()
    return log_r - t.log_weight().double()


@torch.no_grad()
def reward_metrics(model, seed: int, n: int = 2000) -> dict:
    torch.manual_seed(seed + 1)
    sp = model.space
    out = {"evaluation": "exact" if getattr(sp, "exact_ok", False) else "sampled"}
    if out["evaluation"] == "exact":
        out.update(sp.exact(model.log_z_model(), model.reward))
    t = model.sample(n)
    x = t.terminal
    w = log_weights(model, t)
    out.update(log_z_elbo=float(w.mean()), log_z_iw=float(torch.logsumexp(w, 0) - math.log(n)), n_samples=n,
               mean_log_reward=float(model.log_reward(x).mean()))
    if out["evaluation"] == "sampled" and not x.is_floating_point():
        out.update(distinct=int(torch.unique(x, dim=0).shape[0]), log_z_model=model.log_z_model())
    log_z = getattr(model.reward, "log_z", None)
    log_z = out.get("log_z_true") if log_z is None else log_z
    if log_z is not None and model.prior_chain is None:
        out.update(log_z_true=log_z, delta_log_z=log_z - out["log_z_elbo"], delta_log_z_rw=log_z - out["log_z_iw"])
    if getattr(model.reward, "can_sample", False):
        exact = model.reward.sample(n).to(x.device)
        if model.prior_chain is None:
            out["elbo"], out["eubo"] = out["log_z_elbo"], eubo(model, exact)
        m = min(n, W2_MAX)  # an exact assignment: O(m^2) memory, m <= W2_MAX
        out["w2_squared"] = w2_squared(x[:m].float(), exact[:m])
        out["w2"] = math.sqrt(out["w2_squared"])
    modes = model.reward.centres()
    if modes is not None:
        out["modes"] = mode_counts(x.float(), modes, model.reward)
    return out


@torch.no_grad()
def eubo(model, exact: torch.Tensor) -> float:
    """The evidence upper bound E_{x ~ R/Z, tau ~ P_B(.|x)}[log R(x) + log P_B(tau|x) -
    log P_F(tau)] >= log Z, on backward trajectories from exact samples of the target
    (Blessing et al. 2024; Sendera et al. 2024, section 5): the gap to log Z is KL(P_B
    R/Z || P_F), so it reads mode collapse that the ELBO hides."""
    t = model.space.backward(exact)
    return float(log_weights(model, t).mean())


def mode_counts(x: torch.Tensor, modes: torch.Tensor, reward) -> dict:
    """Samples per mode (each sample to its nearest mode) against each mode's share n * w_k:
    the counts, and the smallest count / share (1 = every mode fully covered)."""
    k = torch.cdist(x, modes.to(x.device)).argmin(1)
    counts = torch.bincount(k, minlength=modes.shape[0]).tolist()
    share = reward.w.cpu().double() * x.shape[0]
    ratio = min(c / float(s) for c, s in zip(counts, share))
    return {"counts": counts, "share": [round(float(s), 2) for s in share], "min_ratio": ratio,
            "covered": sum(c >= float(s) / 3 for c, s in zip(counts, share))}


def w2_squared(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared 2-Wasserstein distance between two equal-size samples (uniform weights):
    the mean squared distance of the optimal matching. By POT's network simplex
    (ot.emd2, Flamary et al. 2021) where installed -- the same optimum, about 10x faster
    than an assignment when the samples are far from the target (1.3 s against 13 s for
    2000 x 2000) -- else by scipy's exact assignment."""
    c = torch.cdist(a.double().cpu(), b.double().cpu()).pow(2).numpy()
    try:
        import ot
    except ImportError:
        from scipy.optimize import linear_sum_assignment

        r, col = linear_sum_assignment(c)
        return float(c[r, col].mean())
    return float(ot.emd2(ot.unif(c.shape[0]), ot.unif(c.shape[1]), c, numItermax=10_000_000))


def sliced_w2(a: np.ndarray, b: np.ndarray, n_proj: int = 200, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance by sorted projections (equal sample sizes)."""
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    th = rng.standard_normal((n_proj, a.shape[1]))
    th /= np.linalg.norm(th, axis=1, keepdims=True)
    pa, pb = np.sort(a @ th.T, axis=0), np.sort(b @ th.T, axis=0)
    return float(np.sqrt(((pa - pb) ** 2).mean()))


@torch.no_grad()
def draw_samples(model, n: int, guidance: float | None = None, steps: int | None = None,
                 eta: float | None = None) -> np.ndarray:
    """n samples (n, ...) of an unconditional model, or -- under model.given(...) --
    of the current condition values, with classifier-free guidance where given; a DDPM
    chain in `steps` respaced steps (DDIM where `eta` is given; gfdsl.engine.fewstep)."""
    from gfdsl.engine.fewstep import few_step_sample
    from gfdsl.engine.flowmatching import ode_kernel

    nets = [m for m in model.modules() if hasattr(m, "guidance")]
    for m in nets:
        m.guidance = guidance
    try:
        ode = ode_kernel(model) if steps is not None else None
        x = (ode.integrate(model.space.source_sample(n)[0], steps) if ode is not None
             else few_step_sample(model, n, steps, eta) if steps is not None or eta is not None
             else model.space.forward(n).terminal)
    finally:
        for m in nets:
            m.guidance = None
    return _as_array(model, x, n)


@torch.no_grad()
def draw_given(model, n: int, points: list[dict], guidance: float | None = None, steps: int | None = None,
               eta: float | None = None) -> np.ndarray:
    """Samples of a conditional model at each point (P, n, ...), in the order given."""
    conds = model.conditions
    out = []
    for p in points:
        with model.given(conds.fixed(p, 1, model.device)):
            out.append(draw_samples(model, n, guidance, steps, eta))
    return np.stack(out)


def _as_array(model, x: torch.Tensor, n: int) -> np.ndarray:
    x = (x.cpu().numpy() if not x.is_floating_point() else x.float().cpu().numpy())  # discrete states stay ints
    return x.reshape(n, *model.data_shape) if model.data_shape else x


# -- during training ------------------------------------------------------------------------------


def ipf_round_metrics(model, test_x, seed: int) -> dict:
    """After an IPF round: the sliced 2-Wasserstein distance of 2000 samples to the test
    data, the RNG left as it was (the run continues bit for bit)."""
    state = torch.get_rng_state()
    torch.manual_seed(seed + 123)
    with torch.no_grad():
        x = model.space.forward(2000).terminal.float().cpu().numpy()
    torch.set_rng_state(state)
    return {"sliced_w2": sliced_w2(x, test_x.cpu().numpy())}


def eval_point(model, seed: int) -> dict:
    """A reward model's metrics during training (eval_every), the RNG left as it was."""
    state = torch.get_rng_state()
    try:
        return conditional_metrics(model, None, None, 0, None, seed) if model.conditions else \
            reward_metrics(model, seed)
    finally:
        torch.set_rng_state(state)
