"""The docs stay true: the generated reference tables match the registry and catalogue,
and every registry entry is documented."""

from __future__ import annotations

from pathlib import Path

from gfdsl import docs
from gfdsl.library import REGISTRY
from gfdsl.library.registry import KINDS

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"


def test_generated_sections_are_current():
    for page, sections in docs.PAGES.items():
        text = (DOC.parent / page).read_text(encoding="utf-8")
        assert docs.render(text, sections) == text, f"run `python -m gfdsl.docs` to regenerate docs/{page}"


def test_every_registry_entry_is_documented():
    text = DOC.read_text(encoding="utf-8")
    ref = (DOC.parent / "reference.md").read_text(encoding="utf-8")
    from gfdsl.plugins import describe

    for kind in KINDS:
        section = ref.split(f"## {docs.TITLES[kind]}\n")[-1].split("\n## ")[0]
        for e in docs.builtin(kind):
            assert f"`{e.name}`" in text, (kind, e.name)
            entry = section.split(f"### `{e.name}`\n")[1].split("\n### ")[0]
            for name, *_ in describe(e):
                assert f"| `{name}` |" in entry, (kind, e.name, name)


def test_reference_shows_allowed_values_and_bounds():
    """The values people found only from error messages are in the reference."""
    ref = (DOC.parent / "reference.md").read_text(encoding="utf-8")
    assert '"eps" \\| "x0" \\| "v"' in ref and '"beta_tilde"' in ref
    assert "(> 0)" in ref


def test_every_argument_model_forbids_extras():
    for kind in KINDS:
        for e in REGISTRY.all(kind):
            assert e.args.model_config.get("extra") == "forbid", e.name


def test_what_a_newcomer_had_to_guess_is_documented():
    """The behaviours a newcomer found only by trying (issue: 'What a newcomer hit')."""
    lang = DOC.read_text(encoding="utf-8")
    ref = (DOC.parent / "reference.md").read_text(encoding="utf-8")
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "test_fraction" in ref and "seeded 80/20 split" in ref  # file()'s split
    assert ".csv" in lang and "header" in lang and "label_field" in lang  # how a CSV is given
    assert "coordinate 0 varies fastest" in lang and "2^N values" in lang  # a table's shape per space
    assert "one-hot" in lang and "`cat(K)` state" in lang  # how a categorical state reaches a net
    assert "3 an\ninternal error" in readme or "3 an internal error" in readme  # the exit codes
