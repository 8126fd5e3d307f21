"""The docs stay true: the generated reference tables match the registry and catalogue,
and every registry entry is documented."""

from __future__ import annotations

from pathlib import Path

from gfdsl import docs
from gfdsl.library import REGISTRY
from gfdsl.library.registry import KINDS

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"


def test_generated_sections_are_current():
    text = DOC.read_text(encoding="utf-8")
    assert docs.render(text) == text, "run `python -m gfdsl.docs` to regenerate docs/language.md"


def test_every_registry_entry_is_documented():
    text = DOC.read_text(encoding="utf-8")
    for kind in KINDS:
        for name in REGISTRY.names(kind):
            assert f"`{name}`" in text, (kind, name)


def test_every_argument_model_forbids_extras():
    for kind in KINDS:
        for e in REGISTRY.all(kind):
            assert e.args.model_config.get("extra") == "forbid", e.name
