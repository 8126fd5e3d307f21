"""The command line: exit codes (0 ok, 1 spec error, 2 usage), outputs, no tracebacks,
and `gfdsl check` never importing torch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from gfdsl.cli.app import main

DDPM = "specs/ddpm.gfn"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gfdsl", *args], capture_output=True, text=True, cwd=cwd)


def test_check_ok(in_root, capsys):
    assert main(["check", DDPM]) == 0
    assert "ok  specs/ddpm.gfn: model ddpm, 101 states, 100 steps" in capsys.readouterr().out


def test_check_all_shipped_specs(in_root, capsys):
    from tests.conftest import SPECS

    assert main(["check", "-q", *[str(s.relative_to(in_root)) for s in SPECS]]) == 0
    assert capsys.readouterr().out == ""


def test_check_does_not_import_torch(in_root):
    code = ("import sys; from gfdsl.cli.app import main; rc = main(['check', '-q', 'specs/ddpm.gfn']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'; print('clean')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=in_root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "clean"


def test_missing_file_is_exit_1_without_traceback(in_root, capsys):
    assert main(["check", "specs/nope.gfn"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("specs/nope.gfn: error[E701]: cannot read specs/nope.gfn: no such file")


def test_directory_is_exit_1(in_root, capsys):
    assert main(["check", "specs"]) == 1
    assert "error[E701]" in capsys.readouterr().err


def test_huge_file_refused(tmp_path, capsys):
    p = tmp_path / "big.gfn"
    p.write_text("# x\n" * 400_000)
    assert main(["check", str(p)]) == 1
    assert "error[E702]" in capsys.readouterr().err


def test_usage_errors_exit_2(in_root):
    r = run("frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run("check")
    assert r.returncode == 2
    r = run("check", DDPM, "--set", "T")
    assert r.returncode == 2 and "error[E706]" in r.stderr
    r = run("check", DDPM, "--set", "T=big")  # a value of the wrong kind: the checker's error, exit 1
    assert r.returncode == 1 and "bad override 'T=big': dim 'T' must be a number" in r.stderr


def test_set_overrides_dims(in_root, capsys):
    assert main(["check", DDPM, "--set", "T=7"]) == 0
    assert "8 states, 7 steps" in capsys.readouterr().out
    assert main(["check", DDPM, "--set", "Q=7"]) == 1
    assert "the model has no dim named 'Q'" in capsys.readouterr().err


def test_compile_dumps(in_root, capsys, tmp_path):
    assert main(["compile", DDPM, "--dump", "ast"]) == 0
    assert capsys.readouterr().out.startswith("Model @")
    out = tmp_path / "ir.txt"
    assert main(["compile", DDPM, "--dump", "ir", "--set", "T=2", "-o", str(out)]) == 0
    assert out.read_text().startswith("model ddpm\n")


def test_render_dot(in_root, tmp_path, capsys):
    out = tmp_path / "d.dot"
    assert main(["render", DDPM, "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("digraph ddpm {") and "t = 1..100" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_render_svg(in_root, tmp_path):
    out = tmp_path / "d.svg"
    assert main(["render", DDPM, "-o", str(out)]) == 0
    assert "<svg" in out.read_text()


def test_render_svg_without_dot_is_a_clear_error(in_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["render", DDPM, "-o", str(tmp_path / "d.svg")]) == 1
    assert "error[E705]: writing .svg needs Graphviz's `dot` program" in capsys.readouterr().err
    assert not (tmp_path / "d.svg").exists()


def test_render_unknown_format_and_unwritable(in_root, tmp_path, capsys):
    assert main(["render", DDPM, "-o", str(tmp_path / "d.jpg")]) == 1
    assert "error[E707]" in capsys.readouterr().err
    assert main(["render", DDPM, "-o", str(tmp_path / "no" / "such" / "d.dot")]) == 1
    assert "error[E704]" in capsys.readouterr().err


def test_fmt_check_and_write(tmp_path, capsys):
    p = tmp_path / "m.gfn"
    p.write_text((__import__("tests.conftest").conftest.ROOT / DDPM).read_text().replace("T = 100", "T=100"))
    assert main(["fmt", "--check", str(p)]) == 1
    assert "not in canonical form" in capsys.readouterr().err
    assert main(["fmt", "--write", str(p)]) == 0
    assert main(["fmt", "--check", str(p)]) == 0


def test_fmt_of_broken_spec_changes_nothing(tmp_path, capsys):
    p = tmp_path / "m.gfn"
    p.write_text("model m { dims { T = }")
    assert main(["fmt", "--write", str(p)]) == 1
    assert p.read_text() == "model m { dims { T = }"


def test_explain(capsys):
    assert main(["explain", "E601"]) == 0
    assert "bijective" in capsys.readouterr().out
    assert main(["explain", "E999"]) == 2


def test_internal_errors_are_one_line(monkeypatch, in_root, capsys):
    import gfdsl.driver

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(gfdsl.driver, "check_file", boom)
    monkeypatch.delenv("GFDSL_DEBUG", raising=False)
    assert main(["check", DDPM]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" not in err


def test_fmt_reports_files_in_order(tmp_path):
    """`gfdsl fmt` and `fmt --check` over several files: each file's message in its turn,
    whichever stream it is on (stdout is a pipe here: block-buffered)."""
    import subprocess
    import sys

    a, b, c = tmp_path / "a.gfn", tmp_path / "b.gfn", tmp_path / "c.gfn"
    a.write_text("model a {\n  dims { T = 2 }\n}\n")  # not canonical
    b.write_text("model b {\n  stte x : real[2]\n}\n")  # a syntax error
    c.write_text("model c {\n  dims { T = 2 }\n}\n")
    r = subprocess.run([sys.executable, "-m", "gfdsl", "fmt", "--check", str(a), str(b), str(c)],
                       capture_output=True, text=True)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(str(tmp_path))]
    assert r.returncode == 1 and [ln.split(":")[0] for ln in lines] == [str(a), str(b), str(c)], r.stderr
    r = subprocess.run([sys.executable, "-m", "gfdsl", "fmt", str(a), str(b), str(c)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.stdout.index("model a") < r.stdout.index("b.gfn:2:3") < r.stdout.index("model c"), r.stdout


def test_explain_prints_no_template_placeholders(capsys):
    from gfdsl.errors import CATALOGUE

    for code in CATALOGUE:
        assert main(["explain", code]) == 0
        out = capsys.readouterr().out
        assert "{" not in out and "}" not in out, out
