"""Fuzz the front end: thousands of mutated shipped specs and random token soups.

Every case must end in success or gfdsl diagnostics with valid positions (and, on
success, `fmt` must keep the spec's meaning); anything else is a crash and is printed.

    python bench/fuzz.py [--cases 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
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
    a = ap.parse_args()
    rng = random.Random(a.seed)
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.gfn"))]
    codes: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    crashes = []
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
    dt = time.perf_counter() - t0
    print(f"{a.cases} cases ({kinds['mutation']} mutated specs, {kinds['soup']} token soups) in {dt:.1f} s")
    print(f"  passed the checker: {codes['ok']}")
    print(f"  ended in a diagnostic: {a.cases - codes['ok'] - len(crashes)}")
    print(f"  crashes (anything else): {len(crashes)}")
    print("  first diagnostic codes: " + ", ".join(f"{c} x{n}" for c, n in sorted(codes.items()) if c != "ok"))
    for text, err in crashes[:5]:
        print("---- crash:", err, "\n", text[:400])
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
