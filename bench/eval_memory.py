"""Peak memory of a run with its end-of-run evaluation, against the number of steps T.

`gfdsl run specs/ddpm.gfn --set T=N --steps 2` with the default --eval-n (2000 test
points, k = 20 backward trajectories each), for T = 100 and T = 1,000, each in a fresh
process; prints each command's peak RSS, wall time and the ratio. The goal: the
T = 1,000 run within 2x the peak memory of T = 100 (the likelihood streams over steps,
so its memory is set by the chunk of trajectories, not by T).

    python bench/eval_memory.py [--T 100 1000] [--eval-n 2000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# a wrapper process whose only child is the run: RUSAGE_CHILDREN's max RSS is the run's peak
PROBE = ("import resource, subprocess, sys\n"
         "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
         "sys.stderr.write(r.stderr[-2000:])\n"
         "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def peak(T: int, eval_n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "gfdsl", "run", str(ROOT / "specs" / "ddpm.gfn"), "--set", f"T={T}",
               "--steps", "2", "--eval-n", str(eval_n), "--no-progress", "--out", str(Path(d) / "run")]
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        rc, kib = r.stdout.split()
        if rc != "0":
            raise SystemExit(f"T={T}: the run failed:\n{r.stderr}")
        return int(kib) / 1024, wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--eval-n", type=int, default=2000)
    a = ap.parse_args()
    got = {}
    for T in a.T:
        mib, wall = peak(T, a.eval_n)
        got[T] = mib
        print(f"T = {T:>5}: peak RSS {mib:8.0f} MiB, {wall:6.1f} s (run 2 steps, evaluate {a.eval_n} points, "
              "draw samples)", flush=True)
    lo, hi = min(a.T), max(a.T)
    ratio = got[hi] / got[lo]
    print(f"peak memory T={hi} / T={lo}: {ratio:.2f}  (goal <= 2)")
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
