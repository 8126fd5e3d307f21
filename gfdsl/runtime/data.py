"""Data sets, made on the spot: nothing is downloaded.

- toy2d: eight 2-D densities in the forms popularised by FFJORD (Grathwohl et al. 2019)
  and neural spline flows, generated from a seed with numpy (and scikit-learn's
  generators for moons, circles and the Swiss roll). Train and test sets use different
  seeds derived from the spec's seed.
- digits: scikit-learn's 8x8 digits (shipped inside scikit-learn), 1797 images with
  17 grey levels; binarised as pixel > 8, or kept as levels 0..16 (cat(17)) or scaled to
  [-1, 1] (real).
- file: a user's .npy, .npz, .pt or .csv array, resolved inside the spec's folder
  (gfdsl.runtime.datafiles: formats, memory mapping, the checks of its values).

Every loader returns (train, test) tensors shaped (N, n) for the data state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gfdsl.errors import GfdslError, diag
from gfdsl.files import Inputs


def toy2d(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "8gaussians":
        s = 1 / np.sqrt(2)
        centers = 4 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
        x = centers[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, 2))
        return x / 1.414
    if name == "2spirals":
        m = np.sqrt(rng.random(n // 2 + 1)) * 540 * (2 * np.pi) / 360
        d1 = np.stack([-np.cos(m) * m + rng.random(m.size) * 0.5, np.sin(m) * m + rng.random(m.size) * 0.5], 1)
        x = np.concatenate([d1, -d1])[:n] / 3
        return x + 0.1 * rng.standard_normal(x.shape)
    if name == "checkerboard":
        x1 = rng.random(n) * 4 - 2
        x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
        return np.stack([x1, x2], 1) * 2
    if name == "pinwheel":
        radial, tangential, k, rate = 0.3, 0.1, 5, 0.25
        feats = rng.standard_normal((n, 2)) * np.array([radial, tangential])
        feats[:, 0] += 1
        labels = rng.integers(0, k, n)
        ang = 2 * np.pi * labels / k + rate * np.exp(feats[:, 0])
        rot = np.stack([np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)], 1).reshape(n, 2, 2)
        return 2 * np.einsum("ti,tij->tj", feats, rot)
    if name == "rings":
        radii = np.array([1.0, 2.0, 3.0, 4.0]) * 3 / 4
        r = radii[rng.integers(0, 4, n)]
        a = rng.random(n) * 2 * np.pi
        x = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        return x + 0.08 * rng.standard_normal(x.shape)
    seed = int(rng.integers(0, 2**31 - 1))
    from sklearn import datasets as skd

    if name == "moons":
        x = skd.make_moons(n, noise=0.1, random_state=seed)[0]
        return x * 2 + np.array([-1.0, -0.2])
    if name == "circles":
        return skd.make_circles(n, factor=0.5, noise=0.08, random_state=seed)[0] * 3
    if name == "swissroll":
        return skd.make_swiss_roll(n, noise=1.0, random_state=seed)[0][:, [0, 2]] / 5
    raise KeyError(name)


def load(dataset: dict, data_type: dict, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) for the IR's dataset entry and the data node's attributes; a file
    named by the spec is found through `inputs` (gfdsl.files.Inputs)."""
    return load_labelled(dataset, data_type, inputs)[:2]


def load_labelled(dataset: dict, data_type: dict, inputs: Inputs):
    """(train, test, labels): labels (train (N,), test (M,)) int64, split as the
    examples are, where the entry gives them (digits(labels = true), file(labels =
    ...)), else None."""
    from gfdsl.plugins import construct

    out = construct("dataset", dataset["entry"], dataset["args"], inputs=inputs, data_type=data_type)
    return _checked(dataset["entry"], out, data_type)


def build_entry(a: dict, ctx):
    """The registry's `build` for gfdsl.library.datasets: (train, test, labels or None)."""
    entry, data_type, inputs = ctx.entry, ctx.data_type, ctx.inputs
    numel = int(np.prod(data_type["shape"]))
    if entry == "toy2d":
        tr = toy2d(a["name"], a["n_train"], np.random.default_rng([a["seed"], 0]))
        te = toy2d(a["name"], a["n_test"], np.random.default_rng([a["seed"], 1]))
        return torch.tensor(tr, dtype=torch.float32), torch.tensor(te, dtype=torch.float32), None
    if entry == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = d.data.astype(np.float64)  # (1797, 64), values 0..16
        perm = np.random.default_rng(a["seed"]).permutation(len(x))
        n_test = int(round(len(x) * a["test_fraction"]))
        te_i, tr_i = perm[:n_test], perm[n_test:]
        if a["binarize"]:
            x = (x > 8).astype(np.float32)
            t = torch.tensor(x, dtype=torch.float32)
        elif data_type["dtype"] == "cat":
            t = torch.tensor(x, dtype=torch.long)
        else:
            t = torch.tensor(x / 8.0 - 1.0, dtype=torch.float32)
        y = torch.tensor(d.target, dtype=torch.long)
        return t[tr_i], t[te_i], ((y[tr_i], y[te_i]) if a.get("labels") else None)
    if entry == "file":
        from gfdsl.runtime.datafiles import load_file

        return load_file(a, inputs, data_type, numel)
    if entry == "images":
        from gfdsl.runtime.datafiles import load_images

        return load_images(a, inputs, data_type)
    raise KeyError(entry)


def _checked(entry: str, out, data_type: dict):
    """A data set's (train, test, labels) as tensors of the data state's width, or E801
    naming the entry (a plugin's loader can return anything)."""
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise GfdslError([diag("E801", None, None, path=f"{entry}()",
                               why=f"its loader returned {type(out).__name__}, not (train, test) or (train, test, labels)")])
    train, test, labels = (*out, None)[:3]
    numel = int(np.prod(data_type["shape"]))
    for what, t in (("train", train), ("test", test)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1 or t[0].numel() != numel or len(t) == 0:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise GfdslError([diag("E801", None, None, path=f"{entry}()",
                                   why=f"its {what} set is {shape}, but the data state needs (N, {numel}) with N > 0")])
    return train.reshape(len(train), numel), test.reshape(len(test), numel), labels
