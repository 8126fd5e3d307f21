"""Installing gfdsl: without its torch extra the front end works and the run-time
commands say what to install; the wheel holds the grammar and the shipped specs, and
installed into a fresh venv finds them from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

ROOT = __import__("tests.conftest").conftest.ROOT

# a Python with torch, numpy, safetensors and matplotlib made unimportable, as after
# `pip install gfdsl` without the [torch] extra
NO_TORCH = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "numpy", "safetensors", "matplotlib", "sklearn"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
sys.meta_path.insert(0, Block())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: None if n.split(".")[0] in ("torch", "numpy", "safetensors", "matplotlib") else _find(n, *a)
from gfdsl.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def _no_torch(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("cmd", [["run", "specs/ddpm.gfn", "--steps", "1"], ["sample", "runs/none"], ["eval", "runs/none"]])
def test_runtime_commands_without_torch_say_what_to_install(cmd):
    r = _no_torch(*cmd)
    assert r.returncode == 1, r.stderr
    assert f"gfdsl {cmd[0]}: this needs gfdsl[torch]: pip install 'gfdsl[torch]'" in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_front_end_works_without_torch(tmp_path):
    assert _no_torch("check", "specs/ddpm.gfn", "specs/hypergrid.gfn").returncode == 0
    assert _no_torch("fmt", "--check", "specs/ddpm.gfn").returncode == 0
    assert _no_torch("compile", "specs/ddpm.gfn", "--dump", "ir").returncode == 0
    r = _no_torch("render", "specs/ddpm.gfn", "-o", str(tmp_path / "d.dot"))
    assert r.returncode == 0 and (tmp_path / "d.dot").is_file(), r.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = out.glob("gfdsl-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "gfdsl/grammars/gfn.lark" in names
    shipped = {p.name for p in (ROOT / "specs").glob("*.gfn")}
    assert {f"gfdsl/specs/{n}" for n in shipped} <= names
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "gfdsl").rglob("*.py")}
    assert sources <= names, sorted(sources - names)[:5]  # every module of the package, subpackages too
    assert not any(n.startswith(("tests/", "bench/", "examples/")) for n in names)
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "gfdsl = gfdsl.cli.app:entry" in zipfile.ZipFile(wheel).read(meta).decode()


def test_wheel_installs_into_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    # the venv sees the machine's lark, pydantic, torch...; gfdsl itself comes from the wheel only
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import gfdsl; print(gfdsl.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert str(venv) in where.stdout, where.stdout + where.stderr
    r = subprocess.run([str(venv / "bin" / "gfdsl"), "check", "ddpm", "hypergrid"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("ok  ") == 2, r.stdout + r.stderr
