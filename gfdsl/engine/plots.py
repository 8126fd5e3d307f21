"""Plots of reward-driven models: where P_F stops against where it should (R / Z).

2-D grids are drawn as two heat maps (target R(x)/Z beside the exact P_T(x), or the
empirical frequencies of samples where the space is too big to enumerate); other
enumerable spaces as P_T(x) against R(x)/Z per state on log axes; the rest as a
histogram of the samples' log-rewards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def plot_reward(model, samples: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp = model.space
    if model.exact_ok:
        with torch.no_grad():
            p_t, target = (v.cpu().numpy() for v in model.distributions())
    if model.exact_ok and sp.dtype == "int" and sp.n == 2:
        side = sp.side
        fig, ax = plt.subplots(1, 2, figsize=(8, 4))
        # index k = x0 + side * x1: rows x1, columns x0
        for a, d, name in ((ax[0], target, "target R(x) / Z"), (ax[1], p_t, "P_T(x), exact")):
            im = a.imshow(d.reshape(side, side), origin="lower", cmap="viridis", vmin=0, vmax=target.max())
            a.set_title(name)
            a.set_xlabel("x[0]")
            a.set_ylabel("x[1]")
        fig.colorbar(im, ax=ax, shrink=0.8)
    elif model.exact_ok:
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
    fig.suptitle(title, fontsize=9)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
