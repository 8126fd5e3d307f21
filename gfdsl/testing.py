"""Helpers shared by gfdsl's property tests and its fuzzing benchmark.

`outcome(text)` runs the front end on text and classifies the result: ["ok"], or the
diagnostics' codes in order; anything else (a Python exception, a diagnostic with a span
outside the text) raises AssertionError, which is what the fuzzers look for.
"""

from __future__ import annotations

import random
import re

from gfdsl.driver import check_source
from gfdsl.errors import GfdslError
from gfdsl.lang.fmt import format_source
from gfdsl.lang.parse import parse
from gfdsl.lang.source import Source

TOKEN = re.compile(r"\w+|\S")
VOCAB = ["model", "m", "{", "}", "dims", "T", "=", "3", "state", "x", "[", "]", "t", "in", "0", "..", ":",
         "real", "source", "~", "normal", "(", ")", "data", "step", "->", "for", "forward", "backward",
         "gaussian", "net", ",", "mlp", "objective", "elbo", "+", "*", "-", "**", "/", "%", "dataset", "toy2d",
         '"moons"', "train", "steps", "given", "inverse", "1e-3", "true", ";", "#c\n", "\n", "cat", "binary",
         "1e999", "nan", "inf", "-0", "10**12", "99999999999999999999"]
CHARS = list("{}[]()=,.;:~-+*/%\"'#$@!?\\`\t\n0e") + ["\x00", "\u00e9", "\ufeff", "\u202e"]


def outcome(text: str, path: str = "fuzz.gfn") -> list[str]:
    src = Source(path, text)
    try:
        check_source(src)
    except GfdslError as e:
        assert e.diagnostics, "an error without diagnostics"
        lines = text.split("\n")
        for d in e.diagnostics:
            assert d.code[0] == "E" and d.message, d
            assert d.path == path, d.path
            if d.span is None:
                continue
            assert 1 <= d.span.line <= len(lines), (d.render(), d.span)
            assert 1 <= d.span.col <= len(lines[d.span.line - 1]) + 1, (d.render(), d.span)
            assert d.excerpt, d.render()
        return [d.code for d in e.diagnostics]
    # it passed: formatting must keep its meaning and be stable
    out = format_source(src)
    assert parse(Source("f.gfn", out)) == parse(src), "fmt changed the meaning"
    assert format_source(Source("f.gfn", out)) == out, "fmt is not idempotent"
    return ["ok"]


def mutate(text: str, rng: random.Random, n: int | None = None) -> str:
    """Delete, duplicate, swap or replace tokens; delete or insert characters."""
    for _ in range(n or rng.randint(1, 3)):
        toks = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
        if not toks:
            break
        kind = rng.choice(["del_tok", "dup_tok", "swap_tok", "del_char", "ins_char", "rep_tok"])
        a, b = rng.choice(toks)
        if kind == "del_tok":
            text = text[:a] + text[b:]
        elif kind == "dup_tok":
            text = text[:b] + " " + text[a:b] + text[b:]
        elif kind == "swap_tok":
            (a, b), (c, d) = sorted([(a, b), rng.choice(toks)])
            if b <= c:
                text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
        elif kind == "del_char":
            p = rng.randrange(max(1, len(text)))
            text = text[:p] + text[p + 1:]
        elif kind == "ins_char":
            p = rng.randint(0, len(text))
            text = text[:p] + rng.choice(CHARS) + text[p:]
        else:
            text = text[:a] + rng.choice(VOCAB) + text[b:]
    return text
