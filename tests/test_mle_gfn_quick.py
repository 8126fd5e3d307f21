"""CI runs the MLE-GFN experiment with tiny budgets (the full grid runs from
`python bench/mle_gfn.py`): both models train and evaluate on two data sets, the
configuration is chosen on the validation set, and the table says which model won."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mle_gfn_quick(tmp_path):
    runs, rows, md = tmp_path / "runs.json", tmp_path / "rows.json", tmp_path / "table.md"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "mle_gfn.py"), "--quick", "--json", str(runs),
                        "--rows-json", str(rows), "--md", str(md)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads(runs.read_text())
    table = json.loads(rows.read_text())
    assert {x["dataset"] for x in table} == {"8gaussians", "2spirals"}
    # per (data set, T): three seed-0 candidates and the baseline
    assert {(x["model"], x["config"], x["lambda"]) for x in done} == {
        ("ddpm", None, None), ("mle_gfn", "pb-only", 1.0), ("mle_gfn", "both", 0.1), ("mle_gfn", "both", 1.0)}
    for x in done:
        assert math.isfinite(x["test_nll"]) and math.isfinite(x["val_nll"]) and x["k"] == 20
    for row in table:
        best = min(row["val"], key=row["val"].get)
        chosen = row["config"][0] + ("" if row["config"][0] == "pb-only" else f" lambda={row['config'][1]:g}")
        assert chosen == best
    text = md.read_text()
    assert text.count("\n| ") == 1 + len(table) and ("| MLE-GFN |" in text or "| DDPM |" in text)


def test_mle_gfn_quick_digits_in_bits_per_dim(tmp_path):
    """The image analogue: 17-level digits through the discretised decoder, in bits/dim."""
    runs, md = tmp_path / "runs.json", tmp_path / "table.md"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "mle_gfn.py"), "--quick", "--datasets", "digits",
                        "--lambdas", "1.0", "--json", str(runs), "--md", str(md)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads(runs.read_text())
    for x in done:
        # a discrete likelihood: log p(x) <= 0, so NLL and bits/dim are positive
        assert x["dataset"] == "digits" and 0 < x["test_bpd"] == x["test_nll"] / (64 * math.log(2))
    assert "bits/dim)" in md.read_text()
