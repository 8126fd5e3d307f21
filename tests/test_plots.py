"""What a run draws in samples.png for each kind of data: a 3-D flow gets pairwise
marginals with points, a token sequence per-position token frequencies; every run
keeps 2000 samples and writes loss.png."""

from __future__ import annotations

import numpy as np
import pytest

from gfdsl.cli.app import main
from gfdsl.engine import plots

ROOT = __import__("tests.conftest").conftest.ROOT


@pytest.fixture
def figures(monkeypatch):
    """The figures a run saves, by file name, instead of (as well as) the PNGs."""
    seen = {}
    real = plots._save

    def keep(fig, path, title):
        seen[path.name] = [(len(a.collections), len(a.images), len(a.patches), a.get_xlabel(), a.axison)
                           for a in fig.axes]
        real(fig, path, title)

    monkeypatch.setattr(plots, "_save", keep)
    return seen


def _run(tmp_path, spec_text: str, data: np.ndarray, name: str) -> tuple:
    (tmp_path / "d.npy").write_bytes(b"")
    np.save(tmp_path / "d.npy", data)
    spec = tmp_path / f"{name}.gfn"
    spec.write_text(spec_text)
    out = tmp_path / name
    assert main(["run", str(spec), "--steps", "2", "--out", str(out), "--no-progress", "--eval-n", "20"]) == 0
    return out, np.load(out / "samples.npy")


def test_a_3d_flow_plots_pairwise_marginals_with_points(tmp_path, figures):
    text = (ROOT / "specs" / "maf.gfn").read_text().replace("D = 2", "D = 3").replace(
        'toy2d(name = "moons")', 'file(path = "d.npy")')
    out, samples = _run(tmp_path, text, np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32), "maf3")
    assert samples.shape == (2000, 3)
    axes = figures["samples.png"]
    drawn = [a for a in axes if a[4]]
    assert len(drawn) == 6  # 3 x 3 lower triangle and diagonal
    assert sum(a[0] for a in drawn) >= 3 * 2  # off-diagonal scatters of samples and test data
    assert sum(a[2] for a in drawn) > 0  # diagonal histograms
    assert {"x[0]", "x[1]", "x[2]"} <= {a[3] for a in drawn}
    assert (out / "loss.png").is_file() and "loss.png" in figures


def test_a_token_sequence_plots_token_frequencies(tmp_path, figures):
    text = (ROOT / "specs" / "autoregressive.gfn").read_text().replace("D = 64", "D = 10").replace(
        "binary[i]", "cat(4)[i]").replace("out_per_dim = 2", "out_per_dim = 4").replace(
        "digits(binarize = true)", 'file(path = "d.npy")').replace("H = 512", "H = 32")
    data = np.random.default_rng(0).integers(0, 4, (300, 10))
    out, samples = _run(tmp_path, text, data, "tokens")
    assert samples.shape == (2000, 10) and set(np.unique(samples)) <= {0, 1, 2, 3}
    axes = [a for a in figures["samples.png"] if a[4] and a[3] == "token"]
    assert len(axes) == 3 and all(a[1] == 1 for a in axes)  # data, samples, difference: one heat map each


def test_baselines_reach_summary_json_against_a_hand_computation():
    """The bench-only reference figures are summary.json's `baselines`: independent
    per-pixel categoricals with add-1/2 counts, here on 2 pixels of 3 training images."""
    import math

    import torch

    from gfdsl.engine.baselines import baselines

    tr = torch.tensor([[0, 1], [0, 1], [2, 1]])
    te = torch.tensor([[0, 2]])
    b = baselines({"entry": "digits", "args": {"binarize": False}}, tr, te)
    # pixel 0: counts (2, 0, 1, 0, ...) + 1/2 over 17 levels -> p(0) = 2.5 / 11.5; pixel 1: p(2) = 0.5 / 11.5
    want = -(math.log(2.5 / 11.5) + math.log(0.5 / 11.5))
    assert b["independent_pixels_nats"] == pytest.approx(want) and b["independent_pixels_bpd"] == pytest.approx(
        want / (2 * math.log(2)))
    e = baselines({"entry": "toy2d", "args": {"name": "8gaussians"}}, tr, te)["data_entropy_nats"]
    assert e == pytest.approx(math.log(8) + math.log(2 * math.pi * math.e * (0.5 / 1.414) ** 2))
    assert baselines({"entry": "toy2d", "args": {"name": "moons"}}, tr, te) is None
