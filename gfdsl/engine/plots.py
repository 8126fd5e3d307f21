"""Plots of a run's samples, by what the model is (written atomically as samples.png).

- data models: samples beside test data (a 2-D scatter, or an image grid);
- action spaces: where P_F stops against where it should (R / Z): 2-D grids as two
  heat maps (target R(x)/Z beside the exact P_T(x)); other enumerable spaces as P_T(x)
  against R(x)/Z per state on log axes; the rest as a histogram of log-rewards;
- real states with a reward (samplers, posteriors): 2-D samples over the contours of
  log R, with the samples per mode in the title for mixtures.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, title: str) -> None:
    fig.suptitle(title, fontsize=9)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    os.replace(tmp, path)


def plot_reward(model, samples: np.ndarray, path: Path, title: str) -> None:
    """An action space's terminating distribution against its target."""
    plt = _plt()
    br = model.space
    sp = br.space
    if br.exact_ok:
        with torch.no_grad():
            p_t, target = (v.cpu().numpy() for v in br.distributions(model.reward))
    if br.exact_ok and sp.dtype == "int" and sp.n == 2:
        side = sp.side
        fig, ax = plt.subplots(1, 2, figsize=(8, 4))
        # index k = x0 + side * x1: rows x1, columns x0
        for a, d, name in ((ax[0], target, "target R(x) / Z"), (ax[1], p_t, "P_T(x), exact")):
            im = a.imshow(d.reshape(side, side), origin="lower", cmap="viridis", vmin=0, vmax=target.max())
            a.set_title(name)
            a.set_xlabel("x[0]")
            a.set_ylabel("x[1]")
        fig.colorbar(im, ax=ax, shrink=0.8)
    elif br.exact_ok:
        fig, a = plt.subplots(figsize=(5, 5))
        keep = target > 0
        a.loglog(target[keep], np.clip(p_t[keep], 1e-12, None), ".", ms=3, alpha=0.6)
        lo = target[keep].min()
        a.plot([lo, 1], [lo, 1], "k--", lw=0.8)
        a.set_xlabel("target R(x) / Z")
        a.set_ylabel("P_T(x), exact")
    else:
        fig, a = plt.subplots(figsize=(5, 4))
        with torch.no_grad():
            lr = model.reward(torch.as_tensor(samples, device=model.device).long()).cpu().numpy()
        a.hist(lr, bins=40)
        a.set_xlabel("log R(x) of samples")
    _save(fig, path, title)


def plot_energy(model, samples: np.ndarray, path: Path, title: str) -> None:
    """Real samples over the contours of log R (2-D), beside the frozen prior's samples
    for a posterior; a histogram of their log-rewards beyond two dimensions."""
    plt = _plt()
    flat = samples.reshape(len(samples), -1)
    panels = [("samples (P_F)", flat)]
    if model.prior_chain is not None:
        torch.manual_seed(0)
        with torch.no_grad():
            prior = model.prior_chain.forward(len(flat)).terminal.float().cpu().numpy().reshape(len(flat), -1)
        panels.insert(0, ("the prior's samples", prior))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    if flat.shape[1] != 2:
        plt.close(fig)
        return plot_pairs(model, flat, path, title)
    everything = np.concatenate([p for _, p in panels])
    lo, hi = np.percentile(everything, 0.5, axis=0), np.percentile(everything, 99.5, axis=0)
    modes = model.reward.centres()
    if modes is not None:
        m = modes.cpu().numpy()
        lo, hi = np.minimum(lo, m.min(0)), np.maximum(hi, m.max(0))
    pad = 0.15 * (hi - lo) + 0.5
    g0, g1 = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], 200),
                         np.linspace(lo[1] - pad[1], hi[1] + pad[1], 200))
    grid = torch.tensor(np.stack([g0.ravel(), g1.ravel()], 1), dtype=torch.float32, device=model.device)
    with torch.no_grad():
        lr = model.log_reward(grid).cpu().numpy().reshape(g0.shape)
    lr = np.maximum(lr, lr.max() - 30)  # contours of the region that carries the mass
    for a, (name, pts) in zip(axes[0], panels):
        a.contourf(g0, g1, lr, levels=30, cmap="viridis", alpha=0.8)
        a.scatter(pts[:, 0], pts[:, 1], s=2, c="white", alpha=0.5, edgecolors="none")
        a.set_title(f"{name} over log R(x)", fontsize=9)
        a.set_xlabel("x[0]")
        a.set_ylabel("x[1]")
        a.set_aspect("equal")
    _save(fig, path, title)


def plot_pairs(model, flat: np.ndarray, path: Path, title: str, k: int = 4, reference: np.ndarray | None = None,
               ref_label: str = "exact") -> None:
    """Pairwise marginals of the first k coordinates: samples over a reference -- exact
    samples of the target where it draws them, or the test data (`reference`) -- lower
    triangle scatter, diagonal histograms; with a reward, a histogram of the samples'
    log R(x) in the last panel of the first row."""
    plt = _plt()
    k = min(k, flat.shape[1])
    exact = None if reference is None else reference.reshape(len(reference), -1)[:len(flat)]
    if exact is None and getattr(model.reward, "can_sample", False):
        torch.manual_seed(0)
        exact = model.reward.sample(len(flat)).cpu().numpy().reshape(len(flat), -1)
    fig, axes = plt.subplots(k, k, figsize=(2.6 * k, 2.6 * k), squeeze=False)
    both = flat if exact is None else np.concatenate([flat, exact])
    lo, hi = np.percentile(both[:, :k], 0.5, axis=0), np.percentile(both[:, :k], 99.5, axis=0)
    for r in range(k):
        for c in range(k):
            a = axes[r, c]
            if c > r:
                a.axis("off")
                continue
            if r == c:
                bins = np.linspace(lo[r], hi[r], 40)
                if exact is not None:
                    a.hist(exact[:, r], bins=bins, alpha=0.5, color="tab:orange", density=True, label=ref_label)
                a.hist(flat[:, r], bins=bins, alpha=0.5, color="tab:blue", density=True, label="P_F")
            else:
                if exact is not None:
                    a.scatter(exact[:, c], exact[:, r], s=1, alpha=0.3, c="tab:orange", edgecolors="none")
                a.scatter(flat[:, c], flat[:, r], s=1, alpha=0.3, c="tab:blue", edgecolors="none")
                a.set_xlim(lo[c], hi[c])
                a.set_ylim(lo[r], hi[r])
            if r == k - 1:
                a.set_xlabel(f"x[{c}]", fontsize=8)
            if c == 0:
                a.set_ylabel(f"x[{r}]", fontsize=8)
            a.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    if k > 1 and model.reward is not None:
        with torch.no_grad():
            lr = model.log_reward(torch.as_tensor(flat, device=model.device)).cpu().numpy()
        a = axes[0, k - 1]
        a.axis("on")
        a.hist(lr, bins=40)
        a.set_title("log R(x) of samples", fontsize=8)
        a.tick_params(labelsize=6)
    _save(fig, path, title)


def plot_log_z(points: list[dict], log_z: float | None, path: Path, title: str) -> None:
    """The log Z-hat curve over training: the ELBO and importance-weighted estimates of
    each `eval_every` point (and the EUBO where known), against the exact log Z."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [p["step"] for p in points]
    for key, name in (("log_z_elbo", "ELBO (log Z-hat)"), ("log_z_iw", "importance-weighted"), ("eubo", "EUBO")):
        ys = [p["eval"].get(key) for p in points]
        if any(y is not None for y in ys):
            ax.plot(steps, [np.nan if y is None else y for y in ys], marker="o", ms=3, label=name)
    if log_z is not None:
        ax.axhline(log_z, color="k", lw=1, ls="--", label="exact log Z")
    ax.set_xlabel("training step")
    ax.set_ylabel("log Z estimate")
    ax.legend(fontsize=8)
    _save(fig, path, title)


def plot_samples(model, samples: np.ndarray, test: np.ndarray, path: Path, title: str) -> None:
    """Samples beside test data, the way each kind of data is looked at: a 2-D scatter;
    an image grid for square images; per-position token frequencies for other
    categorical or binary sequences; pairwise marginals of the first coordinates for
    other real vectors."""
    plt = _plt()
    flat = samples.reshape(len(samples), -1)
    side = int(round(math.sqrt(flat.shape[1])))
    shape = tuple(model.data_shape)
    chw = shape if len(shape) == 3 and shape[0] in (1, 3) else (1, side, side)  # a C x H x W image state
    image = (len(shape) == 3 and shape[0] in (1, 3)) or (side * side == flat.shape[1] and flat.shape[1] >= 16)
    if flat.shape[1] != 2 and not image:
        if model.data_dtype in ("cat", "binary"):
            return plot_tokens(flat, test.reshape(len(test), -1), path, title,
                               2 if model.data_dtype == "binary" else int(max(flat.max(), test.max())) + 1)
        return plot_pairs(model, flat, path, title, reference=test, ref_label="test data")
    if flat.shape[1] == 2:
        fig, ax = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
        t = test.reshape(len(test), -1)[:len(flat)]
        lim = np.percentile(np.abs(t), 99.5) * 1.3
        for a, d, name in ((ax[0], t, "test data"), (ax[1], flat, "samples (P_F)")):
            a.scatter(d[:, 0], d[:, 1], s=1, alpha=0.4)
            a.set_title(name)
            a.set_xlim(-lim, lim)
            a.set_ylim(-lim, lim)
            a.set_aspect("equal")
    else:
        fig, axes = plt.subplots(8, 16, figsize=(12, 6.5))
        t = test.reshape(len(test), -1)
        lo, hi = float(min(t.min(), flat.min())), float(max(t.max(), flat.max()))
        for j, a in enumerate(axes.flat):
            src = t if j % 16 < 8 else flat
            idx = (j // 16) * 8 + j % 8
            if idx < min(64, len(src)):  # (a small test set fills fewer cells)
                img = src[idx].reshape(chw)
                if chw[0] == 3:  # RGB: channels last, scaled to [0, 1] together
                    a.imshow(np.clip((img.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-8), 0, 1))
                else:
                    a.imshow(img[0], cmap="gray_r")
            a.axis("off")
        fig.text(0.25, 0.95, "test data", ha="center")
        fig.text(0.75, 0.95, "samples (P_F)", ha="center")
    _save(fig, path, title)


def plot_tokens(flat: np.ndarray, test: np.ndarray, path: Path, title: str, classes: int) -> None:
    """Sequences of tokens: how often each token sits at each position (positions x
    tokens), in the test data and in the samples, and the samples' excess over the data."""
    plt = _plt()
    L = flat.shape[1]
    freq = lambda x: np.stack([(x == v).mean(0) for v in range(classes)], 1)  # noqa: E731  (L, K)
    ft, fs = freq(test.astype(np.int64)), freq(flat.astype(np.int64))
    fig, axes = plt.subplots(1, 3, figsize=(14, max(3.0, min(10.0, 0.12 * L + 1.5))), squeeze=False)
    fig.subplots_adjust(wspace=0.45)
    for a, d, name, cmap, vr in ((axes[0, 0], ft, "test data", "viridis", (0, 1)),
                                 (axes[0, 1], fs, "samples (P_F)", "viridis", (0, 1)),
                                 (axes[0, 2], fs - ft, "samples - data", "coolwarm", (-0.5, 0.5))):
        im = a.imshow(d, aspect="auto", cmap=cmap, vmin=vr[0], vmax=vr[1], interpolation="nearest")
        a.set_title(f"{name}: token frequency", fontsize=9)
        a.set_xlabel("token", fontsize=8)
        a.set_ylabel("position", fontsize=8)
        if classes <= 32:
            a.set_xticks(range(classes))
        a.tick_params(labelsize=6)
        fig.colorbar(im, ax=a, fraction=0.046, pad=0.08)
    _save(fig, path, title)


def plot_given(model, points: list[dict], samples: np.ndarray, path: Path, title: str) -> None:
    """A conditional model's samples, one row per condition value (P, n, ...): images as a
    grid (a row of samples per class), a 2-D grid's exact P_T beside R^beta / Z(beta) per
    value, 2-D points as a scatter per value."""
    from gfdsl.runtime.conditions import label

    plt = _plt()
    P, n = samples.shape[:2]
    flat = samples.reshape(P, n, -1)
    side = int(round(math.sqrt(flat.shape[2])))
    br = model.space
    grid2d = getattr(br, "exact_ok", False) and br.space.dtype == "int" and br.space.n == 2
    if grid2d:
        fig, axes = plt.subplots(P, 2, figsize=(6, 3 * P), squeeze=False)
        for r, p in enumerate(points):
            with torch.no_grad(), model.given(model.conditions.fixed(p, 1, model.device)):
                p_t, target = (v.cpu().numpy() for v in br.distributions(model.reward))
            s = br.space.side
            for a, d, name in ((axes[r, 0], target, "target"), (axes[r, 1], p_t, "P_T, exact")):
                a.imshow(d.reshape(s, s), origin="lower", cmap="viridis", vmin=0, vmax=target.max())
                a.set_title(f"{label(p)}: {name}", fontsize=8)
                a.axis("off")
    elif flat.shape[2] == 2:
        fig, axes = plt.subplots(1, P, figsize=(3 * P, 3), squeeze=False)
        for a, p, pts in zip(axes[0], points, flat):
            a.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
            a.set_title(label(p), fontsize=8)
            a.set_aspect("equal")
    elif side * side == flat.shape[2]:
        cols = min(n, 10)
        fig, axes = plt.subplots(P, cols, figsize=(cols * 0.8, P * 0.85), squeeze=False)
        for r, p in enumerate(points):
            for j in range(cols):
                a = axes[r, j]
                a.imshow(flat[r, j].reshape(side, side), cmap="gray_r")
                a.set_xticks([])
                a.set_yticks([])
                if j == 0:
                    a.set_ylabel(label(p), fontsize=7, rotation=0, ha="right", va="center")
    else:
        fig, a = plt.subplots(figsize=(5, 4))
        for p, x in zip(points, flat):
            with torch.no_grad(), model.given(model.conditions.fixed(p, 1, model.device)):
                lr = model.reward(torch.as_tensor(x, device=model.device)).cpu().numpy()
            a.hist(lr, bins=40, alpha=0.5, label=label(p))
        a.legend(fontsize=7)
        a.set_xlabel("log R(x) of samples")
    _save(fig, path, title)
