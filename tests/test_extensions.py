"""Plugins (gfdsl.plugins, docs/extending.md): the example package in examples/gfdsl_ising,
installed into the test environment by scripts/setup.sh, is found through its entry
point and its spec checks, renders, trains and samples; `--plugin` loads a module that is
not installed; a broken plugin is a clear error naming it; a spec cannot run code."""

from __future__ import annotations

import itertools
import json
import math
import textwrap

import numpy as np
import pytest

from gfdsl.cli.app import main
from gfdsl.library import REGISTRY

ROOT = __import__("tests.conftest").conftest.ROOT
EXAMPLE = ROOT / "examples" / "gfdsl_ising"
SPEC = EXAMPLE / "ising.gfn"


def _installed():
    from gfdsl import plugins

    plugins.load_installed()
    e = REGISTRY.get("energy", "ising")
    assert e is not None, "the example plugin is not installed: run `bash scripts/setup.sh`"
    return e


def test_example_plugin_is_found_through_its_entry_point(capsys):
    e = _installed()
    assert e.source == "gfdsl-ising" and REGISTRY.get("net", "resmlp").source == "gfdsl-ising"
    assert main(["list", "--args"]) == 0
    out = capsys.readouterr().out
    assert "ising (energy)  [plugin gfdsl-ising]" in out and "resmlp (net)  [plugin gfdsl-ising]" in out
    assert "plugins loaded: gfdsl-ising" in out
    assert main(["explain", "ising"]) == 0
    assert "beta: real (>= 0, <= 100) = 0.4  -- inverse temperature" in capsys.readouterr().out


def _ising_log_z(n: int, beta: float) -> float:
    """log sum_s exp(beta sum_<ij> s_i s_j) on the n x n torus, by enumeration."""
    vals = []
    for bits in itertools.product([-1, 1], repeat=n * n):
        s = np.array(bits).reshape(n, n)
        vals.append(beta * ((s * np.roll(s, 1, 0)).sum() + (s * np.roll(s, 1, 1)).sum()))
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def test_example_spec_checks_renders_trains_and_samples(tmp_path, capsys):
    _installed()
    assert main(["check", str(SPEC)]) == 0
    assert main(["render", str(SPEC), "-o", str(tmp_path / "ising.dot")]) == 0
    assert "E = ising" in (tmp_path / "ising.dot").read_text()
    out = tmp_path / "run"
    assert main(["run", str(SPEC), "--set", "N=3", "--set", "W=16", "--steps", "3", "--out", str(out),
                 "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["evaluation"] == "exact" and s["n_states"] == 2 ** 9
    assert s["log_z_true"] == pytest.approx(_ising_log_z(3, 0.3), abs=1e-4)  # the plugin's energy, exactly
    assert json.loads((out / "run.json").read_text())["plugins"]["gfdsl-ising"].startswith("entry point")
    assert main(["sample", str(out), "-n", "20", "-o", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (20, 9) and set(np.unique(x)) <= {0, 1}


def test_plugin_arguments_are_checked_with_line_and_column(tmp_path, capsys):
    _installed()
    bad = tmp_path / "bad.gfn"
    bad.write_text(SPEC.read_text().replace("ising(n = N, beta = 0.3)", "ising(n = N, beta = -1)"))
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:22:" in err and "error[E303]" in err and "beta" in err
    bad.write_text(SPEC.read_text().replace("ising(n = N, beta = 0.3)", "ising(n = 3)"))
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "error[E410]" in err and "9 spins" in err


PLUGIN = '''
from pydantic import Field
from gfdsl.plugins import Args, PosInt, reward


class OnesArgs(Args):
    """{name}(scale = 1.0)."""

    scale: float = Field(default=1.0, ge=0)


def build(args, ctx):
    import torch

    class Ones(torch.nn.Module):
        def forward(self, s):
            return args["scale"] * s.clamp(min=0).sum(1).float()

    return Ones()


reward("{name}", OnesArgs, "scale * (number of items)", types=("set",), need="sets", build=build)
'''

SET_SPEC = """
model m {
  state s : set[3]
  action put[i in 0..2] = add(item = i)
  action stop = exit()
  reward = REWARD
  net pf = mlp(in = 3, out = 4, hidden = [8])
  policy forward = softmax(net = pf)
  policy backward = uniform()
  objective = tb
  train {
    steps = 2
    batch = 4
  }
}
"""


def _spec(tmp_path, reward: str):
    p = tmp_path / "m.gfn"
    p.write_text(SET_SPEC.replace("REWARD", reward))
    return str(p)


def test_plugin_module_from_the_command_line(tmp_path, capsys):
    mod = tmp_path / "ones_plugin.py"
    mod.write_text(PLUGIN.replace("{name}", "count_ones"))
    spec = _spec(tmp_path, "count_ones(scale = 0.5)")
    assert main(["check", spec]) == 1  # not loaded: unknown, and the hint says how to load one
    err = capsys.readouterr().err
    assert "error[E203]: unknown reward 'count_ones'" in err and "--plugin MODULE" in err
    assert main(["check", spec, "--plugin", str(mod)]) == 0
    out = tmp_path / "run"
    assert main(["run", spec, "--plugin", str(mod), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "run.json").read_text())["plugin_modules"] == [str(mod.resolve())]
    assert main(["eval", str(out)]) == 0  # the run names its plugin: no --plugin needed again


@pytest.mark.parametrize("body, says", [
    ("import no_such_package_xyz\n", "failed to import (--plugin {path}): ModuleNotFoundError"),
    (PLUGIN.replace("{name}", "mlp").replace("reward(\"mlp\"", "reward(\"mlp\""),
     "declares reward 'mlp', but net 'mlp' already comes from gfdsl"),
    (PLUGIN.replace("{name}", "dicty").replace("scale: float = Field(default=1.0, ge=0)", "scale: dict = {}"),
     "argument 'scale' of type dict, which a spec cannot write"),
    (PLUGIN.replace("{name}", "plainmodel").replace("class OnesArgs(Args)", "class OnesArgs(__import__('pydantic').BaseModel)"),
     "not a subclass of gfdsl.plugins.Args"),
    (PLUGIN.replace("{name}", "badkind").replace('reward("badkind", OnesArgs, "scale * (number of items)", types=("set",), need="sets", build=build)',
                                                  'from gfdsl.plugins import _declare, Entry\n_declare(Entry("badkind", "kernel", OnesArgs, "x"))'),
     "declares a kernel, but plugins may add only reward, energy, net, dataset, schedule"),
])
def test_broken_plugins_are_clear_errors(tmp_path, capsys, body, says):
    mod = tmp_path / f"broken_{abs(hash(says)) % 10 ** 8}.py"
    mod.write_text(textwrap.dedent(body))
    before = {k: REGISTRY.names(k) for k in ("reward", "net", "kernel")}
    assert main(["check", str(ROOT / "specs" / "hypergrid.gfn"), "--plugin", str(mod)]) == 1
    err = capsys.readouterr().err
    assert f"error[E710]: plugin '{mod.stem}'" in err and says.format(path=mod) in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert {k: REGISTRY.names(k) for k in before} == before  # nothing half-registered


def test_a_failing_build_names_the_plugin(tmp_path, capsys):
    mod = tmp_path / "failing_build.py"
    mod.write_text(PLUGIN.replace("{name}", "fails_build").replace("    import torch\n", "    raise ValueError('no GPU here')\n"))
    assert main(["run", _spec(tmp_path, "fails_build()"), "--plugin", str(mod), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "plugin 'failing_build' failed to build reward fails_build(): ValueError: no GPU here" in err


@pytest.mark.parametrize("reward", [
    '__import__("os")', 'os.system(command = "touch PWNED")', 'gfdsl_ising.torch_half.Ising()',
    'system("touch PWNED")', 'table(file = "/etc/passwd")', 'hypergrid(build = "os:system")',
])
def test_a_spec_cannot_import_or_run_code(tmp_path, monkeypatch, capsys, reward):
    monkeypatch.chdir(tmp_path)
    assert main(["check", _spec(tmp_path, reward)]) == 1
    assert "error[E" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()


SCHEDULE_PLUGIN = '''
from pydantic import Field
from gfdsl.plugins import Args, PosInt, schedule


class SigmoidArgs(Args):
    steps: PosInt = Field(le=100_000)
    lo: float = Field(default=1e-4, gt=0, lt=1)
    hi: float = Field(default=0.02, gt=0, lt=1)


def betas(args, ctx):
    import torch

    t = torch.linspace(-6, 6, args["steps"], dtype=torch.float64)
    return args["lo"] + (args["hi"] - args["lo"]) * torch.sigmoid(t) * BAD


schedule("sigmoid_betas", SigmoidArgs, "betas along a sigmoid", build=betas)
'''


def test_a_plugin_schedule_drives_a_ddpm(tmp_path, capsys):
    import torch

    from gfdsl.compile.lower import lower
    from gfdsl.driver import check_file

    mod = tmp_path / "sched_plugin.py"
    mod.write_text(SCHEDULE_PLUGIN.replace("BAD", "1"))
    spec = tmp_path / "d.gfn"
    spec.write_text((ROOT / "specs" / "ddpm.gfn").read_text().replace("linear(", "sigmoid_betas(").replace(
        "start = ", "lo = ").replace("end = ", "hi = "))
    assert main(["check", str(spec), "--plugin", str(mod), "--set", "T=5"]) == 0
    c = check_file(spec, {"T": 5})
    sched = next(iter(lower(c.graph, c.source).space.schedules.values()))
    t = torch.linspace(-6, 6, 5, dtype=torch.float64)
    lo, hi = c.graph.graph["schedules"]["beta"]["args"]["lo"], c.graph.graph["schedules"]["beta"]["args"]["hi"]
    assert torch.allclose(sched.beta.double(), lo + (hi - lo) * torch.sigmoid(t), atol=1e-7)
    bad = tmp_path / "bad_sched_plugin.py"
    bad.write_text(SCHEDULE_PLUGIN.replace("BAD", "100").replace("sigmoid_betas", "sigmoid_bad"))
    spec.write_text(spec.read_text().replace("sigmoid_betas(", "sigmoid_bad("))
    assert main(["run", str(spec), "--plugin", str(bad), "--set", "T=5", "--steps", "1", "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 1
    assert "plugin 'bad_sched_plugin' built schedule sigmoid_bad() with betas outside (0, 1)" in capsys.readouterr().err


def test_a_plugin_failing_at_run_time_is_named_not_a_gfdsl_bug(tmp_path, capsys):
    mod = tmp_path / "late_failure.py"
    mod.write_text(PLUGIN.replace("{name}", "fails_late").replace(
        "return args[\"scale\"] * s.clamp(min=0).sum(1).float()", "raise RuntimeError('the reward service is down')"))
    out = tmp_path / "r"
    assert main(["run", _spec(tmp_path, "fails_late()"), "--plugin", str(mod), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error[E710]: plugin 'late_failure' raised RuntimeError: the reward service is down" in err, err
    assert f"{mod}:" in err and "internal error" not in err
