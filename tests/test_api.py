"""The Python API (gfdsl.api, docs/api.md): load, compile, data, train; and the example
of docs/api.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import gfdsl

ROOT = __import__("tests.conftest").conftest.ROOT


def test_load_checks_without_torch():
    code = ("import sys, gfdsl; s = gfdsl.load('specs/ddpm.gfn', T=4); "
            "assert s.settings['steps'] > 0 and s.graph.graph['dims']['T'] == 4; "
            "assert 'torch' not in sys.modules; print(s.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ddpm", out.stderr


def test_load_errors_are_diagnostics():
    with pytest.raises(gfdsl.GfdslError) as e:
        gfdsl.loads("model m {\n  stte x : real[2]\n}\n", path="m.gfn")
    assert "m.gfn:2:3: error[E105]" in str(e.value.render())


def test_compile_data_loss_and_train(tmp_path):
    spec = gfdsl.load(ROOT / "specs" / "ddpm.gfn", T=3)
    model = spec.compile()
    train, test = spec.data()
    assert train.shape[1] == 2 and test.shape[1] == 2
    loss, terms = model.loss(train[:8])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.sample(5).terminal.shape == (5, 2)
    s = gfdsl.train(spec, steps=2, batch=8, out=str(tmp_path / "r"), eval_n=5, eval_k=2)
    assert s["steps"] == 2 and (tmp_path / "r" / "summary.json").is_file()
    with pytest.raises(TypeError, match="unknown settings"):
        gfdsl.train(spec, stepz=2)
    reward_only = gfdsl.load(ROOT / "specs" / "hypergrid.gfn")
    assert reward_only.data() == (None, None)


def test_docs_example_runs_as_written():
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"test NLL \d+\.\d+ nats, samples \(1000, 2\)", out.stdout), out.stdout
