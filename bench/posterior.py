"""The posterior of specs/posterior_ddpm.gfn against what prior(x) R(x) predicts.

The prior is a DDPM of 8gaussians; the reward R(x) = sigmoid(4 x_0) keeps the modes
on the right, halves the two on the axis x_0 = 0 and removes those on the left. Each
sample is assigned to its nearest mode centre; the table gives, per mode:

  data * R     the share prior(x) R(x) / Z predicts with the true data density as the
               prior: (1/8) E_{x ~ mode k}[R(x)], normalised (1e6 draws per mode)
  prior * R    the same with the trained prior itself: its samples weighted by R
               (self-normalised importance weights) -- the posterior rtb targets
  posterior    the share of the fine-tuned model's samples

    python bench/posterior.py                    # train the spec (about 10 min, 1 thread)
    python bench/posterior.py --run runs/post    # measure a finished run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

S = 1 / math.sqrt(2)
CENTRES = 4 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (S, S), (S, -S), (-S, S), (-S, -S)]) / 1.414
NOISE = 0.5 / 1.414  # gfdsl.runtime.data.toy2d("8gaussians")


def nearest(x: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - CENTRES[None]) ** 2).sum(-1).argmin(1)


def shares(k: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    w = np.ones(len(k)) if w is None else w
    return np.bincount(k, weights=w, minlength=8) / w.sum()


def main() -> int:
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions, load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a finished run of specs/posterior_ddpm.gfn (default: train one)")
    ap.add_argument("--n", type=int, default=10_000, help="samples of the posterior and of the prior")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    run = a.run
    if run is None:
        run = tempfile.mkdtemp() + "/posterior"
        train(str(ROOT / "specs" / "posterior_ddpm.gfn"), RunOptions(out=run, progress=False))
    c, model, step, _ = load_model(Path(run))
    reward = model.reward
    rng = np.random.default_rng(0)
    data_r = []
    for ck in CENTRES:  # (1/8) E[R(x)] over each true mode
        x = ck + NOISE * rng.standard_normal((1_000_000, 2))
        data_r.append(float(reward(torch.tensor(x, dtype=torch.float32)).exp().mean()))
    data_r = np.array(data_r) / sum(data_r)
    torch.manual_seed(1)
    with torch.no_grad():
        prior_x = model.prior_chain.forward(a.n).terminal
        post_x = model.space.forward(a.n).terminal
        w = reward(prior_x).exp().double().numpy()
    prior_r = shares(nearest(prior_x.numpy()), w)
    post = shares(nearest(post_x.numpy()))
    names = ["(+1, 0)", "(-1, 0)", "(0, +1)", "(0, -1)", "(+, +)", "(+, -)", "(-, +)", "(-, -)"]
    print(f"posterior_ddpm at step {step}: {a.n} samples each, nearest of 8 mode centres\n")
    print("| mode | data * R | prior * R | posterior |\n|---|---|---|---|")
    for i in range(8):
        print(f"| {names[i]} | {data_r[i]:.3f} | {prior_r[i]:.3f} | {post[i]:.3f} |")
    tv_prior = 0.5 * np.abs(post - prior_r).sum()
    tv_data = 0.5 * np.abs(post - data_r).sum()
    print(f"\ntotal variation between the posterior's mode shares and prior * R: {tv_prior:.3f}; "
          f"and data * R: {tv_data:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"run": run, "step": step, "n": a.n, "data_r": data_r.tolist(),
                                            "prior_r": prior_r.tolist(), "posterior": post.tolist(),
                                            "tv_prior": tv_prior, "tv_data": tv_data}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
