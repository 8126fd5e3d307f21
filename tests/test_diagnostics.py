"""Golden diagnostics: every broken spec in tests/bad/ gives exactly its expected text.

Each `tests/bad/NAME.gfn` has `tests/golden/bad/NAME.txt` holding what `gfdsl check`
prints: `path:line:col: error[CODE]: message`, the line with the span underlined, a
hint. Exit code 1, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gfdsl.cli.app import main
from gfdsl.errors import CATALOGUE

BAD = sorted((Path(__file__).parent / "bad").glob("*.gfn"))


def test_there_are_enough_broken_specs():
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_broken_spec_diagnostic(path, capsys, in_root, golden):
    rel = path.relative_to(in_root).as_posix()
    code = main(["check", rel])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith(rel + ":"), first
    golden(f"bad/{path.stem}.txt", err)


def test_every_code_in_the_catalogue_is_documented():
    doc = (Path(__file__).parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    missing = [c for c in CATALOGUE if c not in doc]
    assert not missing, f"codes missing from docs/language.md: {missing}"


def test_codes_families_cover_each_phase():
    from gfdsl.errors import diag

    cats = {p.stem.split("_")[0] for p in BAD}
    assert {"syntax", "name", "arg", "shape", "graph", "cap", "enc"} <= cats
    d = diag("E201", None, None, path="x.gfn", name="q", hint="")
    assert d.render().startswith("x.gfn: error[E201]: unknown name 'q'")
