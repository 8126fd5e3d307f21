"""Start-up benchmark: time from process start to `gfdsl check` finishing, per spec.

Runs `python -m gfdsl check SPEC` as a fresh process (what an editor hook does) several
times and prints the median, plus whether torch got imported. Usage:

    python bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    specs = sorted((ROOT / "specs").glob("*.gfn"))
    print(f"{'spec':24} {'median s':>9} {'min s':>7}  torch imported")
    probe = ("import sys, runpy; sys.argv = ['gfdsl', 'check', '-q', sys.argv[1]]\n"
             "from gfdsl.cli.app import main\nrc = main(sys.argv[1:])\n"
             "print('torch' in sys.modules); sys.exit(rc)")
    # baseline: the interpreter alone, to separate Python's own start-up
    base = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t)
    print(f"{'(python -c pass)':24} {statistics.median(base):9.3f} {min(base):7.3f}")
    worst = 0.0
    for spec in specs:
        times, torch = [], None
        for _ in range(a.repeat):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", probe, str(spec)], capture_output=True, text=True, cwd=ROOT)
            times.append(time.perf_counter() - t)
            if r.returncode != 0:
                print(r.stderr)
                return 1
            torch = r.stdout.strip()
        worst = max(worst, statistics.median(times))
        print(f"{spec.stem:24} {statistics.median(times):9.3f} {min(times):7.3f}  {torch}")
    print(f"worst median: {worst:.3f} s per `gfdsl check` process")
    # time from process start to the first diagnostic of a broken spec
    bad = ROOT / "tests" / "bad" / "name_unknown_net.gfn"
    times = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "gfdsl", "check", str(bad)], capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
        assert r.returncode == 1 and "error[E201]" in r.stderr
    print(f"{'first diagnostic (E201)':24} {statistics.median(times):9.3f} {min(times):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
