"""Validation of data-trained models: a held-out split of the training set (never the
test set), its NLL every `val_every` steps, the best weights kept in best.safetensors,
and early stopping after `patience` validation points without improvement.

The split is a seeded permutation of the training examples, so a resumed run holds out
the same ones; the best value, its step and the count of points since are kept in the
checkpoint's metadata, so early stopping resumes where it was. The NLL is scored with
its own RNG stream (torch.random.fork_rng), so validating does not change the training
run: a run with `val_every` set trains bit for bit as without, on the same split.
"""

from __future__ import annotations

import math

import torch

from gfdsl.engine.checkpoint import save_weights, spec_hash


def split(train_x: torch.Tensor, train_y: torch.Tensor | None, fraction: float, seed: int,
          contiguous: bool = False):
    """(train_x, train_y, val_x, val_y): the last `fraction` of a seeded permutation held
    out; `contiguous` (a memory-mapped file): the last rows, as views, nothing copied."""
    n = train_x.shape[0]
    n_val = int(round(n * fraction))
    if not fraction or n_val == 0:
        return train_x, train_y, None, None
    if contiguous:
        keep, val = slice(0, n - n_val), slice(n - n_val, n)
    else:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 * seed + 17))
        keep, val = perm[:n - n_val], perm[n - n_val:]
    pick = (lambda y, i: None if y is None else y[i])
    return train_x[keep], pick(train_y, keep), train_x[val], pick(train_y, val)


class Validation:
    """The validation state of one run: what to score, the best so far, the patience left."""

    def __init__(self, settings: dict, val_x: torch.Tensor, val_y: torch.Tensor | None, meta: dict | None):
        self.x, self.y = val_x, val_y
        self.every = settings["val_every"] or settings["checkpoint_every"]
        self.n, self.k, self.patience = min(settings["val_n"], val_x.shape[0]), settings["val_k"], settings["patience"]
        self.delta = settings["val_delta"]
        meta = meta or {}
        self.best = float(meta.get("val_best", math.inf))
        self.best_step = int(meta.get("val_best_step", 0))
        self.since = int(meta.get("val_since", 0))  # validation points since the best
        self.stopped_at: int | None = None

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last

    def score(self, model, seed: int) -> float:
        """Mean negative log-likelihood (nats) of the first val_n held-out points: IWAE with
        val_k backward trajectories (the ELBO at k = 1; exact models exactly)."""
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(seed + 3)
            x = self.x[:self.n].to(model.device)
            values = None
            if model.conditions:  # each point at its own label, never dropped (a drawn value where none)
                y = None if self.y is None else self.y[:self.n].to(model.device)
                values = model.conditions.draw(self.n, model.device, None, y)
                values.update({n: y for n, c in model.conditions.specs.items() if c["source"] == "labels"})
            with model.given(values):
                ll = model.log_likelihood(x, k=self.k)
        return float(-ll.mean())

    def update(self, step: int, nll: float, model, out, text: str, write: bool = True) -> dict:
        """Record one validation point: keep the weights if it is the best (`write`: this
        process writes the run folder); returns the metrics.jsonl record."""
        better = math.isfinite(nll) and nll < self.best - self.delta
        if better:
            self.best, self.best_step, self.since = nll, step, 0
            if write:
                save_weights(out, model, step, spec_hash(text), {"val_nll_nats": repr(nll)})
        else:
            self.since += 1
        if self.patience and self.since >= self.patience:
            self.stopped_at = step
        return {"step": step, "val_nll_nats": nll, "val_best": better}

    def meta(self) -> dict:
        """What the checkpoint keeps so that a resumed run continues the same early stopping."""
        return {"val_best": repr(self.best), "val_best_step": str(self.best_step), "val_since": str(self.since)}

    def summary(self, fraction: float) -> dict:
        return {"fraction": fraction, "n": int(self.x.shape[0]), "n_scored": self.n, "k": self.k,
                "every": self.every, "patience": self.patience, "delta": self.delta, "best_step": self.best_step,
                "best_val_nll_nats": self.best if math.isfinite(self.best) else None,
                "stopped_early_at": self.stopped_at}
