"""Property tests: no input, however mangled, gets anything but success or a gfdsl
diagnostic with a valid line and column. Mutations of the shipped specs (delete,
duplicate or swap tokens and characters, insert stray characters) and random token
soups. CI runs a few hundred cases; set GFDSL_FUZZ_EXAMPLES for a longer run."""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gfdsl.driver import check_source
from gfdsl.errors import GfdslError
from gfdsl.fmt import format_source
from gfdsl.parse import parse
from gfdsl.source import Source
from tests.conftest import SPECS

EXAMPLES = int(os.environ.get("GFDSL_FUZZ_EXAMPLES", "150"))
TEXTS = [s.read_text(encoding="utf-8") for s in SPECS]
TOKEN = re.compile(r"\w+|\S")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
VOCAB = ["model", "m", "{", "}", "dims", "T", "=", "3", "state", "x", "[", "]", "t", "in", "0", "..", ":",
         "real", "source", "~", "normal", "(", ")", "data", "step", "->", "for", "forward", "backward",
         "gaussian", "net", ",", "mlp", "objective", "elbo", "+", "*", "-", "**", "/", "%", "dataset", "toy2d",
         '"moons"', "train", "steps", "given", "inverse", "1e-3", "true", ";", "#c\n", "\n", "cat", "binary"]


def assert_ok_or_diagnostic(text: str) -> None:
    src = Source("fuzz.gfn", text)
    try:
        check_source(src)
    except GfdslError as e:
        assert e.diagnostics
        lines = text.split("\n")
        for d in e.diagnostics:
            assert d.code[0] == "E" and d.message
            assert d.path == "fuzz.gfn"
            if d.span is None:
                continue
            assert 1 <= d.span.line <= len(lines), (d.render(), d.span)
            assert 1 <= d.span.col <= len(lines[d.span.line - 1]) + 1, (d.render(), d.span)
            assert d.excerpt, d.render()
        return
    # it passed: formatting must keep its meaning
    assert parse(Source("f.gfn", format_source(src))) == parse(src)


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        toks = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
        if not toks:
            break
        kind = draw(st.sampled_from(["del_tok", "dup_tok", "swap_tok", "del_char", "ins_char", "rep_tok"]))
        i = draw(st.integers(0, len(toks) - 1))
        a, b = toks[i]
        if kind == "del_tok":
            text = text[:a] + text[b:]
        elif kind == "dup_tok":
            text = text[:b] + " " + text[a:b] + text[b:]
        elif kind == "swap_tok":
            j = draw(st.integers(0, len(toks) - 1))
            (a, b), (c, d) = sorted([toks[i], toks[j]])
            if b <= c:
                text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
        elif kind == "del_char":
            p = draw(st.integers(0, max(0, len(text) - 1)))
            text = text[:p] + text[p + 1:]
        elif kind == "ins_char":
            p = draw(st.integers(0, len(text)))
            ch = draw(st.sampled_from(list("{}[]()=,.;:~-+*/%\"'#$@!?\\`\t\n0e") + ["\x00", "\u00e9", "\ufeff"]))
            text = text[:p] + ch + text[p:]
        else:
            text = text[:a] + draw(st.sampled_from(VOCAB)) + text[b:]
    return text


@SETTINGS
@given(mutated())
def test_mutated_specs_end_in_success_or_a_diagnostic(text):
    assert_ok_or_diagnostic(text)


@SETTINGS
@given(st.lists(st.sampled_from(VOCAB), max_size=60))
def test_token_soup(tokens):
    assert_ok_or_diagnostic(" ".join(tokens))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    assert_ok_or_diagnostic(text)


def test_pathological_inputs():
    base = TEXTS[0]
    for text in [
        "model m { dims { X = " + "(" * 10_000 + "1" + ")" * 10_000 + " } }",
        "model m { dims { X = " + "-" * 5_000 + "1 } }",
        "model m { dims { X = " + " + ".join(["1"] * 20_000) + " } }",
        "model m { dims { X = 10 ** 10 ** 10 } }",
        "model m { dims { X = 1e400 } }",
        "model m { dims { X = 99999999999999999999999999999 * 99999999999999999999 } }",
        base.replace("T = 100", "T = 10**12"),
        base.replace("T = 100", "T = -5"),
        base.replace("T = 100", "T = 0"),
        base.replace("T = 100", "T = 2.5"),
        base.replace('"8gaussians"', '"' + "x" * 100_000 + '"'),
        "\ufeff" + base,
        base.replace("\n", "\r\n"),
        "model",
        "}",
        "",
    ]:
        assert_ok_or_diagnostic(text)
