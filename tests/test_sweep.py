"""`gfdsl sweep` over 2 settings x 2 seeds of a tiny spec, then `gfdsl compare` on it."""

from __future__ import annotations

import json

import pytest

from gfdsl.cli.app import main
from gfdsl.cli.experiments import grid, parse_seeds, split_values
from gfdsl.errors import GfdslError

ROOT = __import__("tests.conftest").conftest.ROOT
TINY = str(ROOT / "tests" / "data" / "tiny_grid.gfn")


def test_grid_parsing():
    assert split_values("1e-3,3e-4") == ["1e-3", "3e-4"]
    assert split_values("[16, 16],[32]") == ["[16, 16]", "[32]"]
    assert parse_seeds("0-2") == [0, 1, 2] and parse_seeds("5,0,5") == [0, 5]
    assert grid(["lr=1,2", "batch=8,16"], [0]) == [
        {"lr": "1", "batch": "8", "seed": 0}, {"lr": "1", "batch": "16", "seed": 0},
        {"lr": "2", "batch": "8", "seed": 0}, {"lr": "2", "batch": "16", "seed": 0}]
    with pytest.raises(GfdslError):
        parse_seeds("a-b")
    with pytest.raises(GfdslError):
        grid(["lr"], [0])


def test_sweep_then_compare(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", TINY, "--set", "lr=1e-3,3e-3", "--seeds", "0-1", "--out", str(out), "-j", "2"]) == 0
    state = json.loads((out / "sweep.json").read_text())["runs"]
    assert sorted(state) == ["lr=1e-3,seed=0", "lr=1e-3,seed=1", "lr=3e-3,seed=0", "lr=3e-3,seed=1"]
    assert all(s["status"] == "done" for s in state.values())
    for name in state:
        s = json.loads((out / name / "summary.json").read_text())
        info = json.loads((out / name / "run.json").read_text())
        assert s["seed"] == int(name[-1]) and info["train"]["lr"] == float(name[3:7])
    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("lr=")]
    assert len(rows) == 4 and "exact_l1" in text.splitlines()[0]
    assert (out / "compare.png").stat().st_size > 10_000
    # a second sweep finds every run finished and redoes none
    before = {n: (out / n / "summary.json").stat().st_mtime_ns for n in state}
    assert main(["sweep", TINY, "--set", "lr=1e-3,3e-3", "--seeds", "0-1", "--out", str(out)]) == 0
    assert before == {n: (out / n / "summary.json").stat().st_mtime_ns for n in state}


def test_sweep_refuses_a_bad_value_before_running(tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["sweep", TINY, "--set", "lr=1e-3,-1", "--out", str(out)]) == 1
    assert "bad override 'lr=-1'" in capsys.readouterr().err and not out.exists()
    assert main(["compare", str(tmp_path)]) == 1
