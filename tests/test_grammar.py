"""The grammar itself: strict LALR (no conflicts, no terminal collisions), shipped as
package data, and a few parse facts."""

from __future__ import annotations

from importlib import resources

import pytest

from gfdsl.lang import ast
from gfdsl.errors import GfdslError
from gfdsl.lang.parse import parse, parser
from gfdsl.lang.source import Source


def test_grammar_is_strict():
    pytest.importorskip("interegular")
    parser.cache_clear()
    try:
        parser(strict=True)  # raises on any shift/reduce conflict or terminal collision
    finally:
        parser.cache_clear()


def test_grammar_ships_in_the_package():
    assert "model" in resources.files("gfdsl.grammars").joinpath("gfn.lark").read_text()


def p(text: str) -> ast.Model:
    return parse(Source("t.gfn", text))


def test_precedence_and_associativity():
    e = p("model m { dims { X = 1 - 2 - 3 * 4 ** 2 ** 3 } }").items[0].assigns[0].value
    assert e.op == "-" and e.left.op == "-"  # left-associative minus
    mul = e.right
    assert mul.op == "*" and mul.right.op == "**" and mul.right.right.op == "**"  # right-assoc power


def test_keywords_may_name_arguments():
    m = p("model m { net n = mlp(in = 2, out = 2) }")
    assert [a.name for a in m.items[0].call.args] == ["in", "out"]


def test_spans_are_exact():
    m = p("model m {\n  state x : real[2]\n}")
    s = m.items[0]
    assert (s.span.line, s.span.col, s.span.end_line, s.span.end_col) == (2, 3, 2, 20)
    assert (s.name_span.line, s.name_span.col) == (2, 9)


def test_optional_semicolons_and_trailing_comma():
    m = p("model m { dims { A = 1; B = 2; } net n = mlp(in = A, out = B,); }")
    assert len(m.items) == 2


@pytest.mark.parametrize("text,code", [
    ("model m { state x : real[2] ", "E103"),
    ("model m { train { steps 10 } }", "E104"),
    ("model m { stte x : real[2] }", "E105"),
    ("model m { step a -> b { forwad = f() } }", "E105"),
    ("model m { dims { A = 1 @ } }", "E101"),
    ('model m { dataset = f(name = "x) }', "E108"),
    ("model m { } }", "E109"),
    ("model m { dims { A = (1] } }", "E103"),
    ("", "E107"),
    ("model a { } model b { }", "E110"),
    ("model m { dims { A = 1 + } }", "E102"),
])
def test_curated_syntax_messages(text, code):
    with pytest.raises(GfdslError) as e:
        p(text)
    assert e.value.diagnostics[0].code == code, e.value.render()
