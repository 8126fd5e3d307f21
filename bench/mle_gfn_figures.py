"""The figures of the MLE-GFN experiment (arXiv:2209.02606, Figures 1 and 2 analogues).

1. Fine-tuning: one DDPM baseline run on 8gaussians with checkpoints at several points;
   from each checkpoint, training continues for the same number of steps either as the
   DDPM (fixed P_B) or as MLE-GFN (the same P_F weights, a fresh learned P_B, elbo +
   lambda * tbc(k = 2)). Test NLL (importance-weighted) against steps, one figure.
2. Samples: ground truth above, MLE-GFN samples below, one panel per data set.

    python bench/mle_gfn_figures.py --out docs/img [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mle_gfn import DATASETS, adam, build, data  # noqa: E402
from mle_gfn import fit as train  # noqa: E402


def nll(m, x: torch.Tensor, k: int, seed: int) -> float:
    m.eval()
    torch.manual_seed(seed)
    return float(-m.log_likelihood(x, k=k).mean())


def finetune(a) -> dict:
    tr, _, te = data("8gaussians", 10)
    te = te[:a.n_test]
    base = build("ddpm", "8gaussians", a.T, 0)
    opt = adam(base)
    gen = torch.Generator().manual_seed(0)
    curve = {"baseline": [], "branches": []}
    done = 0
    checkpoints = []
    for c in a.checkpoints:
        train(base, tr, c - done, done, a.batch, gen, opt)
        done = c
        curve["baseline"].append((c, nll(base, te, a.k, 1)))
        checkpoints.append((c, {k: v.clone() for k, v in base.state_dict().items()}))
        print(f"baseline step {c}: {curve['baseline'][-1][1]:.4f}", flush=True)
    for c, sd in checkpoints:
        for model in ("ddpm", "mle_gfn"):
            m = build(model, "8gaussians", a.T, 1)
            own = m.state_dict()
            own.update({k: v for k, v in sd.items() if k.startswith("nets.eps")})  # the same P_F
            m.load_state_dict(own)
            o = adam(m)
            g = torch.Generator().manual_seed(c)
            pts = [(c, nll(m, te, a.k, 1))]
            per = a.finetune // a.points
            for j in range(a.points):
                train(m, tr, per, c + j * per, a.batch, g, o)
                pts.append((c + (j + 1) * per, nll(m, te, a.k, 1)))
            curve["branches"].append({"from": c, "model": model, "points": pts})
            print(f"from {c} as {model}: {pts[-1][1]:.4f}", flush=True)
    return curve


def plot_finetune(curve: dict, path: Path, a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    bx, by = zip(*curve["baseline"])
    ax.plot(bx, by, "k.-", label="DDPM baseline (checkpoints)")
    for b in curve["branches"]:
        x, y = zip(*b["points"])
        style = dict(color="tab:blue", ls="-") if b["model"] == "mle_gfn" else dict(color="tab:gray", ls="--")
        ax.plot(x, y, marker=".", label=("fine-tuned as MLE-GFN" if b["model"] == "mle_gfn" else "continued as DDPM")
                if b["from"] == curve["branches"][0]["from"] else None, **style)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel(f"test NLL (nats, K = {a.k})")
    ax.set_title(f"8gaussians, T = {a.T}: fine-tuning DDPM checkpoints", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def samples_figure(a, path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, len(DATASETS), figsize=(3 * len(DATASETS), 6))
    out = {}
    for j, ds in enumerate(DATASETS):
        tr, _, te = data(ds, 10)
        m = build("mle_gfn", ds, a.T, 0)
        o = adam(m)
        train(m, tr, a.sample_steps, 0, a.batch, torch.Generator().manual_seed(0), o)
        m.eval()
        torch.manual_seed(2)
        with torch.no_grad():
            s = m.sample(2000).states[-1].numpy()
        out[ds] = nll(m, te[:a.n_test], a.k, 1)
        t = te[:2000].numpy()
        lim = np.percentile(np.abs(t), 99.5) * 1.3
        for i, (d, name) in enumerate(((t, "ground truth"), (s, "MLE-GFN samples"))):
            ax[i, j].scatter(d[:, 0], d[:, 1], s=1, alpha=0.4, color="k" if i == 0 else "tab:blue")
            ax[i, j].set_xlim(-lim, lim)
            ax[i, j].set_ylim(-lim, lim)
            ax[i, j].set_aspect("equal")
            ax[i, j].set_xticks([])
            ax[i, j].set_yticks([])
            ax[i, j].set_title(f"{ds}: {name}" if i == 0 else f"{name}, NLL {out[ds]:.2f}", fontsize=9)
        print(f"samples {ds}: test NLL {out[ds]:.4f}", flush=True)
    fig.suptitle(f"MLE-GFN, T = {a.T}, {a.sample_steps} steps of batch {a.batch}", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--T", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--checkpoints", nargs="+", type=int, default=[250, 500, 1000, 2000])
    ap.add_argument("--finetune", type=int, default=500, help="steps after each checkpoint")
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--sample-steps", type=int, default=1500)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=500)
    a = ap.parse_args()
    if a.quick:
        a.T, a.checkpoints, a.finetune, a.points, a.sample_steps, a.k, a.n_test = 3, [5, 10], 4, 2, 5, 4, 20
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    curve = finetune(a)
    plot_finetune(curve, out / "mle_gfn_finetune.png", a)
    nlls = samples_figure(a, out / "mle_gfn_samples.png")
    (out / "mle_gfn_figures.json").write_text(json.dumps({"finetune": curve, "samples_nll": nlls,
                                                         "seconds": time.perf_counter() - t0}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
