"""Fuzz gfdsl: thousands of mutated shipped specs and random token soups.

Every case must end in success or gfdsl diagnostics with valid positions (and, on
success, `fmt` must keep the spec's meaning); anything else is a crash and is printed.
With --deep N, the first N mutants that pass the checker also go past the front end:
`run --steps 2` (a posterior with --prior-steps 2), `sample` and `eval`, each a fresh
process under a wall-clock cap and an address-space cap; each must exit 0 or 1 (a
diagnostic) -- an internal error (exit 3), a traceback, a timeout or a kill is counted
and printed.

    python bench/fuzz.py [--cases 5000] [--seed 0] [--deep 100] [--deep-timeout 120]
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gfdsl.testing import VOCAB, mutate, outcome  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deep", type=int, default=0, help="mutants that check to run, sample and evaluate")
    ap.add_argument("--deep-timeout", type=float, default=120.0, help="wall-clock cap per command, seconds")
    ap.add_argument("--deep-memory", type=float, default=16.0, help="address-space cap per command, GiB")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.gfn"))]
    codes: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    crashes, deep = [], []
    t0 = time.perf_counter()
    for i in range(a.cases):
        if i % 4 == 3:
            kind, text = "soup", " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 60)))
        else:
            kind, text = "mutation", mutate(rng.choice(texts), rng, rng.randint(1, 4))
        kinds[kind] += 1
        try:
            got = outcome(text)
        except BaseException as e:  # noqa: BLE001 - a crash is what we are looking for
            crashes.append((text, "".join(traceback.format_exception_only(type(e), e)).strip()))
            continue
        codes[got[0]] += 1
        if got[0] == "ok" and len(deep) < a.deep:
            deep.append(text)
    dt = time.perf_counter() - t0
    print(f"{a.cases} cases ({kinds['mutation']} mutated specs, {kinds['soup']} token soups) in {dt:.1f} s")
    print(f"  passed the checker: {codes['ok']}")
    print(f"  ended in a diagnostic: {a.cases - codes['ok'] - len(crashes)}")
    print(f"  crashes (anything else): {len(crashes)}")
    print("  first diagnostic codes: " + ", ".join(f"{c} x{n}" for c, n in sorted(codes.items()) if c != "ok"))
    for text, err in crashes[:5]:
        print("---- crash:", err, "\n", text[:400])
    bad = run_deep(deep, a.deep_timeout, a.deep_memory) if deep else 0
    return 1 if crashes or bad else 0


def _cap(gib: float):
    def f():
        lim = int(gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    return f


def run_deep(texts: list[str], timeout: float, gib: float) -> int:
    """check -> run 2 steps -> sample -> eval on each text; print the tally and return
    the number of bad outcomes (internal errors, tracebacks, hangs, kills)."""
    tally: collections.Counter = collections.Counter()
    worst: list[tuple[str, str, str]] = []
    t0 = time.perf_counter()
    for i, text in enumerate(texts):
        with tempfile.TemporaryDirectory() as d:
            spec = Path(d) / "m.gfn"
            spec.write_text(text, encoding="utf-8")
            run = Path(d) / "run"
            extra = ["--prior-steps", "2"] if " then rtb" in text else []
            cmds = [["run", str(spec), "--steps", "2", "--eval-n", "50", "--no-progress", "--out", str(run),
                     "--max-memory", "8G", *extra],
                    ["sample", str(run), "-n", "20"], ["eval", str(run), "--n", "50"]]
            for cmd in cmds:
                try:
                    r = subprocess.run([sys.executable, "-m", "gfdsl", *cmd], capture_output=True, text=True,
                                       timeout=timeout, preexec_fn=_cap(gib), cwd=d)
                except subprocess.TimeoutExpired:
                    tally["hang"] += 1
                    worst.append(("hang", cmd[0], text))
                    break
                what = ("traceback" if "Traceback" in r.stderr else "ok" if r.returncode == 0 else
                        "diagnostic" if r.returncode == 1 else "internal error" if r.returncode == 3 else
                        f"killed ({r.returncode})")
                tally[f"{cmd[0]}: {what}"] += 1
                if what not in ("ok", "diagnostic"):
                    worst.append((what, cmd[0], r.stderr[-400:] + "\n" + text[:300]))
                if r.returncode != 0:
                    break  # a refused run leaves nothing to sample or evaluate
        print(f"  deep {i + 1}/{len(texts)}: {dict(tally)}", flush=True)
    print(f"deep: {len(texts)} mutants that check, run -> sample -> eval, in {time.perf_counter() - t0:.0f} s "
          f"(cap {timeout:.0f} s and {gib:.0f} GiB per command)")
    for k, n in sorted(tally.items()):
        print(f"  {k}: {n}")
    for what, cmd, info in worst[:5]:
        print(f"---- {what} in {cmd}:\n{info}")
    return len(worst)


if __name__ == "__main__":
    sys.exit(main())
