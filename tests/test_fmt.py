"""`gfdsl fmt`: parse(fmt(s)) == parse(s), idempotence, comments kept, shipped specs
already canonical."""

from __future__ import annotations

import pytest

from gfdsl.lang.fmt import expr, format_source
from gfdsl.lang.parse import parse
from gfdsl.files import read_source
from gfdsl.lang.source import Source
from tests.conftest import SPECS


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_shipped_specs_are_canonical(spec):
    src = read_source(spec)
    assert format_source(src) == src.text


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_fmt_of_squashed_spec_restores_it(spec):
    """Squash all layout (keeping comments on their lines), format, compare ASTs."""
    src = read_source(spec)
    squashed = "\n".join(" ".join(line.split()) for line in src.text.split("\n"))
    out = format_source(Source("s.gfn", squashed))
    assert parse(Source("o.gfn", out)) == parse(src)
    assert format_source(Source("o.gfn", out)) == out
    assert out.count("#") == src.text.count("#")


def test_one_line_spec_is_spread_out():
    text = 'model m { dims { D=2 } state x:real[D] source x~normal() data x step x->x{forward=gaussian(net=n)} }'
    out = format_source(Source("m.gfn", text))
    assert out == (
        "model m {\n"
        "  dims {\n"
        "    D = 2\n"
        "  }\n"
        "  state x : real[D]\n"
        "  source x ~ normal()\n"
        "  data x\n"
        "  step x -> x {\n"
        "    forward = gaussian(net = n)\n"
        "  }\n"
        "}\n"
    )


def test_comments_everywhere_are_kept():
    text = ("# head\nmodel m { # after brace\n  dims { # dims\n  # inside\n  D = 2 # two\n  # end of dims\n  }\n"
            "  objective = elbo # obj\n  # before close\n} # tail\n# after\n")
    out = format_source(Source("m.gfn", text))
    for c in ["# head", "# after brace", "# dims", "# inside", "# two", "# end of dims", "# obj",
              "# before close", "# tail", "# after"]:
        assert c in out, c
    assert format_source(Source("m.gfn", out)) == out


@pytest.mark.parametrize("text", ["a - (b - c)", "(a - b) - c", "a / (b * c)", "-(a + b)", "(-a) ** b",
                                  "a ** b ** c", "(a ** b) ** c", "-a ** b", "2 * (3 + 4) % 5"])
def test_minimal_parentheses_keep_the_tree(text):
    src = Source("e.gfn", f"model m {{ dims {{ X = {text} }} }}")
    e = parse(src).items[0].assigns[0].value
    printed = expr(e)
    again = parse(Source("e.gfn", f"model m {{ dims {{ X = {printed} }} }}")).items[0].assigns[0].value
    assert again == e
    assert printed == text or printed.count("(") < text.count("(")
