"""Shared test settings and the golden-file fixture.

tests/bad/ holds deliberately broken specs: the gfdsl pytest plugin must not collect
them as specs to pass; tests/test_diagnostics.py reads them instead.

Golden files live under tests/golden/. To accept new output after a deliberate change,
run `GFDSL_UPDATE_GOLDEN=1 pytest tests` and review the diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

collect_ignore = ["bad"]

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.gfn"))
UPDATE = bool(os.environ.get("GFDSL_UPDATE_GOLDEN"))


@pytest.fixture
def golden():
    """golden(relative_path, text): compare text with tests/golden/<path> (or write it)."""

    def check(rel: str, text: str) -> None:
        path = ROOT / "tests" / "golden" / rel
        if UPDATE or not path.exists():
            if not UPDATE:
                pytest.fail(f"missing golden file {path}; run with GFDSL_UPDATE_GOLDEN=1 to create it")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"output differs from {path.relative_to(ROOT)}"

    return check


@pytest.fixture
def in_root(monkeypatch):
    """Run with the repository root as the working directory (paths in messages)."""
    monkeypatch.chdir(ROOT)
    return ROOT
