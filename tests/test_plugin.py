"""The pytest plugin: `pytest DIR` collects *.gfn files; a broken spec fails with its
caret diagnostic, not a Python traceback."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_plugin_collects_and_reports(pytester):
    pytester.makefile(".gfn", good="""
model good {
  state z : real[2]
  state x : real[2]
  source z ~ normal()
  data x
  net n = mlp(in = 2, out = 4)
  net m = mlp(in = 2, out = 4)
  step z -> x {
    forward  = gaussian(net = n)
    backward = gaussian(net = m)
  }
  dataset = toy2d(name = "moons")
  objective = elbo(train = "both")
}
""")
    pytester.makefile(".gfn", bad="model bad {\n  stte x : real[2]\n}\n")
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "bad.gfn:2:3: error[E105]: unknown keyword 'stte'" in out
    assert "^^^^" in out and "did you mean 'state'?" in out
    assert "Traceback" not in out
