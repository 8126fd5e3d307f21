"""Conditional models: nets that read their conditions, classifier-free guidance, a
conditional log Z(beta) against exact enumeration, the labelled data path, and the CLI's
`--given` / `--guidance` with their errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gfdsl.cli.app import main
from gfdsl.compile.lower import lower
from gfdsl.driver import check_file, check_source
from gfdsl.engine.evaluate import draw_given, draw_samples
from gfdsl.engine.loop import train
from gfdsl.engine.rundir import RunOptions
from gfdsl.errors import GfdslError
from tests.conftest import ROOT

DIGITS = ROOT / "specs" / "ddpm_digits_cond.gfn"
GRID = ROOT / "specs" / "hypergrid_cond.gfn"


def _digits_model(T: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    c = check_file(DIGITS, {"T": T, "H": 32})
    return lower(c.graph, c.source)


def test_changing_the_class_changes_the_denoiser_output():
    m = _digits_model()
    net = m.nets["eps"]
    x, t = torch.randn(4, 64), torch.full((4,), 2)
    outs = []
    for y in (0, 3, 3):
        with m.given(m.conditions.fixed({"y": y}, 4)):
            outs.append(net(x, t))
    assert torch.equal(outs[1], outs[2])  # the same class: the same output
    assert (outs[0] - outs[1]).abs().max() > 1e-4  # another class: another output


def test_one_value_per_row_is_the_same_as_a_shared_value():
    """Values of B rows and one value every row shares give the same outputs; rows of
    batched calls (k * B) read batch row i mod B."""
    m = _digits_model()
    net = m.nets["eps"]
    x, t = torch.randn(6, 64), torch.full((6,), 1)
    with m.given({"y": torch.tensor([2, 5, 2, 5, 2, 5])}):
        per_row = net(x, t)
    with m.given({"y": torch.tensor([2, 5])}):  # tiled: rows 0, 2, 4 get 2
        tiled = net(x, t)
    torch.testing.assert_close(per_row, tiled)
    with m.given({"y": torch.tensor([2])}):
        shared = net(x[::2], t[::2])
    torch.testing.assert_close(shared, per_row[::2])


def test_guidance_zero_is_the_null_label_sampler_and_one_the_conditional():
    m = _digits_model()
    m.eval()
    conds = m.conditions
    assert conds.dropout == pytest.approx(0.1)

    def draw(values, guidance=None):
        torch.manual_seed(7)
        with m.given(values):
            return draw_samples(m, 6, guidance)

    y3 = conds.fixed({"y": 3})
    np.testing.assert_array_equal(draw(y3, 0.0), draw(conds.null(y3)))
    np.testing.assert_array_equal(draw(y3, 1.0), draw(y3))
    assert not np.array_equal(draw(y3, 3.0), draw(y3))
    torch.manual_seed(7)
    rows = draw_given(m, 6, [{"y": 3}], 0.0)
    assert rows.shape == (1, 6, 64)
    np.testing.assert_array_equal(rows[0], draw(conds.null(y3)))


def test_cond_dropout_replaces_that_share_of_labels_by_the_null_label():
    m = _digits_model()
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (20000,), generator=g)
    y = m.conditions.draw(20000, "cpu", g, labels)["y"]
    null = y == 10
    assert abs(float(null.float().mean()) - 0.1) < 0.01
    assert torch.equal(y[~null], labels[~null])


def test_conditional_log_z_of_a_tiny_grid_against_exact_enumeration(tmp_path):
    """A 3 x 3 grid's learned log Z(beta) and P_T against logsumexp(beta log R) computed
    here from the untempered reward, at the three eval_given temperatures."""
    s = train(str(GRID), RunOptions(steps=600, out=str(tmp_path / "run"), progress=False, samples=200), {"H": 3})
    c = check_file(GRID, {"H": 3})
    m = lower(c.graph, c.source)
    states = torch.tensor([[i, j] for i in range(3) for j in range(3)])
    log_r = m.reward.target(states)  # (9,), the reward before tempering
    for beta in (0.5, 1.0, 2.0):
        exact = float(torch.logsumexp(beta * log_r, 0))
        got = s["conditions"][f"beta={beta:g}"]
        assert got["log_z_true"] == pytest.approx(exact, abs=1e-5)
        assert abs(got["log_z_model"] - exact) < 0.1, (beta, got)
        assert got["exact_l1"] < 0.15, (beta, got)
    # the three temperatures are three different targets
    assert len({round(s["conditions"][k]["log_z_true"], 3) for k in s["given"]}) == 3


def _labelled_toy(tmp_path, permute: bool):
    """Four well-separated clusters in 2-D, the label the cluster: given the label, a point
    is far more predictable, so the true labels must beat permuted ones."""
    g = np.random.default_rng(0)
    y = g.integers(0, 4, 1200)
    centres = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
    x = centres[y] + 0.3 * g.standard_normal((1200, 2))
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "y.npy", g.permutation(y) if permute else y)
    spec = (ROOT / "specs" / "ddpm.gfn").read_text()
    spec = spec.replace('dataset = toy2d(name = "8gaussians")', 'dataset = file(path = "x.npy", labels = "y.npy")')
    spec = spec.replace("  data x[0]\n", "  data x[0]\n  condition c : int(0, 3)\n")
    spec = spec.replace("time_embed = 128)", "time_embed = 128, cond = [c])")
    (tmp_path / "toy.gfn").write_text(spec)
    return tmp_path / "toy.gfn"


def test_permuted_labels_are_worse(tmp_path):
    """Real labels tell the model the cluster (up to log 4 = 1.39 nats of -log p(x | c)),
    permuted ones tell it nothing; both runs report a figure per class."""
    nll = {}
    for permute in (False, True):
        d = tmp_path / str(permute)
        d.mkdir()
        spec = _labelled_toy(d, permute)
        s = train(str(spec), RunOptions(steps=400, out=str(d / "run"), progress=False, eval_n=400, eval_k=4,
                                        samples=50), {"T": 10})
        assert set(s["conditions"]) == {"c=0", "c=1", "c=2", "c=3"} and s["n_eval"] == 240
        nll[permute] = s["test_nll_nats"]
    assert nll[False] < nll[True] - 0.4, nll


def test_label_file_of_the_wrong_length_is_refused(tmp_path):
    spec = _labelled_toy(tmp_path, False)
    np.save(tmp_path / "y.npy", np.zeros(1000, dtype=np.int64))
    with pytest.raises(GfdslError) as e:
        train(str(spec), RunOptions(steps=1, out=str(tmp_path / "run"), progress=False))
    assert "E801" in str(e.value) and "1000" in str(e.value)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_label_outside_the_condition_range_is_refused(tmp_path):
    spec = _labelled_toy(tmp_path, False)
    y = np.load(tmp_path / "y.npy")
    y[5] = 4
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(GfdslError) as e:
        train(str(spec), RunOptions(steps=1, out=str(tmp_path / "run"), progress=False))
    assert "E801" in str(e.value) and "label 4 is outside" in str(e.value)


BASE = GRID.read_text()


@pytest.mark.parametrize("edit, code", [
    (("cond = [beta])\n\n  policy", "cond = [gamma])\n\n  policy"), "E201"),  # an undeclared condition
    (("cond_embed", "cond_embed"), None),  # (no edit: the shipped spec checks)
    (("condition beta : real ~ uniform(lo = 0.5, hi = 2.0)", "condition beta : real"), "E616"),  # no source
    (("    seed             = 0\n", "    seed             = 0\n    cond_dropout = 0.1\n"), "E612"),  # dropout: int only
    (("    seed             = 0\n", "    seed             = 0\n    replay = 100\n"), "E612"),
])
def test_checker_rules(edit, code):
    text = BASE.replace(*edit)
    assert text != BASE or code is None
    if code is None:
        check_source(text)
        return
    with pytest.raises(GfdslError) as e:
        check_source(text, path="c.gfn")
    assert f"error[{code}]" in str(e.value) and "c.gfn:" in str(e.value)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    train(str(GRID), RunOptions(steps=5, out=str(out), progress=False, samples=20), {"H": 4})
    return out


def test_sample_given_and_the_default_grid(grid_run, tmp_path, capsys):
    assert main(["sample", str(grid_run), "-n", "7", "--given", "beta=0.5", "--given", "beta=2",
                 "-o", str(tmp_path / "a.npy")]) == 0
    assert np.load(tmp_path / "a.npy").shape == (2, 7, 2)
    assert "beta=0.5, beta=2" in capsys.readouterr().out
    assert main(["sample", str(grid_run), "-n", "3", "-o", str(tmp_path / "b.npy")]) == 0
    assert np.load(tmp_path / "b.npy").shape == (3, 3, 2)  # eval_given's three temperatures


@pytest.mark.parametrize("flags, says", [
    (["--given", "beta=3"], "outside [0.5, 2]"),
    (["--given", "y=3"], "no condition 'y'"),
    (["--given", "beta"], "is not NAME=VALUE"),
    (["--given", "beta=hot"], "is not a number"),
    (["--guidance", "2"], "needs an int condition"),
])
def test_bad_given_flags(grid_run, flags, says, capsys):
    assert main(["sample", str(grid_run), "-n", "2", *flags]) == 1
    err = capsys.readouterr().err
    assert "error[E709]" in err and says in err and "Traceback" not in err


def test_bad_class_for_a_digits_run(tmp_path, capsys):
    out = tmp_path / "run"
    train(str(DIGITS), RunOptions(steps=2, out=str(out), progress=False, eval_n=20, eval_k=2, samples=2),
          {"T": 3, "H": 32})
    assert main(["sample", str(out), "-n", "2", "--given", "y=10"]) == 1
    assert "y=10 is outside y's range int(0, 9)" in capsys.readouterr().err
    assert main(["sample", str(out), "-n", "2", "--given", "y=9", "--guidance", "2", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (1, 2, 64)
    capsys.readouterr()
    assert main(["eval", str(out), "--n", "30", "--k", "2"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n_eval"] == sum(v["n_eval"] for v in ev["conditions"].values()) == 30
