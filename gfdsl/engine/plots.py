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
        with torch.no_grad():
            lr = model.log_reward(torch.as_tensor(flat, device=model.device)).cpu().numpy()
        axes[0, 0].hist(lr, bins=40)
        axes[0, 0].set_xlabel("log R(x) of samples")
        return _save(fig, path, title)
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


def plot_samples(samples: np.ndarray, test: np.ndarray, path: Path, title: str) -> None:
    """Samples beside test data: a 2-D scatter, or an image grid."""
    plt = _plt()
    flat = samples.reshape(len(samples), -1)
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
        side = int(round(math.sqrt(flat.shape[1])))
        n = min(64, len(flat))
        fig, axes = plt.subplots(8, 16, figsize=(12, 6.5))
        t = test.reshape(len(test), -1)
        for j, a in enumerate(axes.flat):
            src = t if j % 16 < 8 else flat
            idx = (j // 16) * 8 + j % 8
            if idx < n and side * side == flat.shape[1]:
                a.imshow(src[idx].reshape(side, side), cmap="gray_r")
            a.axis("off")
        fig.text(0.25, 0.95, "test data", ha="center")
        fig.text(0.75, 0.95, "samples (P_F)", ha="center")
    _save(fig, path, title)
