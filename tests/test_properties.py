"""Property tests: no input, however mangled, gets anything but success or a gfdsl
diagnostic with a valid line and column. Mutations of the shipped specs (delete,
duplicate or swap tokens and characters, insert stray characters) and random token
soups. CI runs a few hundred cases; set GFDSL_FUZZ_EXAMPLES for a longer run, or use
`python bench/fuzz.py` for thousands with a report."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gfdsl.cli.app import main
from gfdsl.testing import VOCAB, mutate, outcome
from tests.conftest import SPECS

EXAMPLES = int(os.environ.get("GFDSL_FUZZ_EXAMPLES", "150"))
TEXTS = [s.read_text(encoding="utf-8") for s in SPECS]
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(st.sampled_from(TEXTS), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_mutated_specs_end_in_success_or_a_diagnostic(text, seed, n):
    outcome(mutate(text, random.Random(seed), n))


@SETTINGS
@given(st.lists(st.sampled_from(VOCAB), max_size=60))
def test_token_soup(tokens):
    outcome(" ".join(tokens))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    outcome(text)


def test_pathological_inputs():
    base = next(s.read_text(encoding="utf-8") for s in SPECS if s.stem == "ddpm")
    cases = {
        "model m { dims { X = " + "(" * 10_000 + "1" + ")" * 10_000 + " } }": "E106",
        "model m { dims { X = " + "-" * 5_000 + "1 } }": "E106",
        "model m { dims { X = " + " + ".join(["1"] * 20_000) + " } }": "E106",
        "model m { dims { X = 10 ** 10 ** 10 } }": "E407",
        "model m { dims { X = 1e400 } }": "E407",
        "model m { dims { X = nan } }": "E201",
        "model m { dims { X = 99999999999999999999999999999 } }": "E407",
        base.replace("T = 100", "T = 10**12"): "E708",
        base.replace("T = 100", "T = -5"): "E408",
        base.replace("T = 100", "T = 0"): "E303",
        base.replace("T = 100", "T = 2.5"): "E305",
        base.replace("D = 2 ", "D = 0 "): "E401",
        base.replace("D = 2 ", "D = -2"): "E401",
    }
    for text, code in cases.items():
        got = outcome(text)
        assert code in got, (got, code, text[:80])
    for text in ["\ufeff" + base, base.replace("\n", "\r\n"), base.replace('"8gaussians"', '"' + "x" * 100_000 + '"'),
                 "model", "}", ""]:
        outcome(text)


def test_ten_megabyte_spec_is_refused_before_reading(tmp_path, capsys):
    p = tmp_path / "big.gfn"
    with open(p, "w") as f:
        f.write("# padding\n" * 1_048_576)  # 10 MiB
    assert main(["check", str(p)]) == 1
    err = capsys.readouterr().err
    assert "error[E702]" in err and "10.0 MiB" in err
