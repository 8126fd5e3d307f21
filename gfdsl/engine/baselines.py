"""Reference figures of a data set, computed beside every run so that summary.json holds
what a model's number should be read against (bench/zoo.py reads them from there):

  independent_pixels   digits: -log p(test) of independent per-pixel categoricals (17
                       levels) or Bernoullis (binarised), fitted to the training split by
                       counting plus 1/2: the floor any image model should beat
  data_entropy         toy2d 8gaussians: the entropy of the generating mixture, log 8 +
                       the entropy of one component (the components barely overlap, so
                       this is the best test NLL any model can reach, to about 1e-3)
"""

from __future__ import annotations

import math

import torch


def baselines(dataset: dict | None, train: torch.Tensor | None, test: torch.Tensor | None) -> dict | None:
    if dataset is None or train is None or test is None:
        return None
    a = dataset["args"]
    if dataset["entry"] == "toy2d" and a.get("name") == "8gaussians":
        sigma = 0.5 / 1.414  # each component's std after the generator's scaling
        return {"data_entropy_nats": math.log(8) + math.log(2 * math.pi * math.e * sigma ** 2)}
    if dataset["entry"] == "digits":
        levels = 2 if a.get("binarize") else 17
        tr, te = _levels(train, levels), _levels(test, levels)
        counts = torch.stack([torch.bincount(tr[:, j], minlength=levels) for j in range(tr.shape[1])]).double() + 0.5
        logp = (counts / counts.sum(1, keepdim=True)).log()  # (64, levels)
        nll = float(-logp[torch.arange(tr.shape[1]), te].sum(1).mean())
        return {"independent_pixels_nats": nll, "independent_pixels_bpd": nll / (tr.shape[1] * math.log(2))}
    return None


def _levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Pixel values as level indices 0..levels-1: integers as they are, reals in [-1, 1]
    (the 17 levels scaled) mapped back."""
    x = x.cpu()
    if x.dtype.is_floating_point and levels == 17:
        x = torch.round((x + 1) * 8)
    return x.long().clamp(0, levels - 1)
