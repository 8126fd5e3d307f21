"""CI runs the model zoo with a few smoke steps per spec (the full budgets run from
`python bench/zoo.py`): every shipped spec trains, evaluates and lands in the table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_zoo_quick(tmp_path):
    out, js = tmp_path / "zoo.md", tmp_path / "zoo.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "zoo.py"), "--quick", "--out", str(out), "--json", str(js)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(js.read_text())
    # the families trained from data alone; those with a reward are measured by their
    # own benches (bench/torchgfn, bench/posterior.py) and docs/results.md
    specs = {p.stem for p in (ROOT / "specs").glob("*.gfn") if not re.search(r"^\s*(reward|energy)\s*=", p.read_text(), re.M)}
    assert {row["spec"] for row in rows} == specs
    assert all(isinstance(row["ours"], float) for row in rows)
    assert out.read_text().count("\n| ") == len(rows) + 1  # the header row too
