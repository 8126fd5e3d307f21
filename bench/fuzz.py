"""Fuzz gfdsl: thousands of mutated shipped specs and random token soups.

Every case must end in success or gfdsl diagnostics with valid positions (and, on
success, `fmt` must keep the spec's meaning); anything else is a crash and is printed.
With --deep N, the first N mutants that pass the checker also go past the front end:
`run --steps 2` (a posterior with --prior-steps 2), `sample` and `eval`, through the
CLI's `main` in a worker process under an address-space cap (one import of torch for
many mutants: about 2 s a mutant here), a mutant past a wall-clock cap is a hang and its
worker is replaced; each command must exit 0 or 1 (a diagnostic) -- an internal error
(exit 3), a traceback, a hang or a killed worker is counted and printed.

    python bench/fuzz.py [--cases 5000] [--seed 0] [--deep 100] [--deep-timeout 120]
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
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


def _commands(spec: Path, run: Path, text: str) -> list[list[str]]:
    extra = ["--prior-steps", "2"] if " then rtb" in text else []
    return [["run", str(spec), "--steps", "2", "--eval-n", "50", "--eval-k", "2", "--samples", "20",
             "--no-progress", "--out", str(run), "--max-memory", "8G", *extra],
            ["sample", str(run), "-n", "20"], ["eval", str(run), "--n", "50", "--k", "2"]]


def _worker(conn, gib: float) -> None:
    """One process that runs many mutants in turn, each command through the CLI's own
    `main` (so torch and matplotlib are imported once, not three times per mutant); the
    parent kills it on a hang and starts another. Answers (command, outcome, stderr) per
    command of each case."""
    import contextlib
    import io
    import os

    lim = int(gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    from gfdsl.cli.app import main as cli

    while True:
        text = conn.recv()
        out = []
        with tempfile.TemporaryDirectory() as d:
            spec, run = Path(d) / "m.gfn", Path(d) / "run"
            spec.write_text(text, encoding="utf-8")
            os.chdir(d)
            for cmd in _commands(spec, run, text):
                err = io.StringIO()
                try:
                    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                        rc = cli(cmd)
                except SystemExit as e:  # argparse refusals
                    rc = e.code if isinstance(e.code, int) else 2
                except BaseException as e:  # noqa: BLE001 - what escapes main is a traceback
                    rc, err = -1, io.StringIO("Traceback: " + "".join(traceback.format_exception(e))[-2000:])
                what = ("traceback" if rc == -1 or "Traceback" in err.getvalue() else "ok" if rc == 0 else
                        "diagnostic" if rc == 1 else "internal error" if rc == 3 else f"exit {rc}")
                out.append((cmd[0], what, err.getvalue()[-400:]))
                if rc != 0:
                    break  # a refused run leaves nothing to sample or evaluate
            os.chdir(ROOT)
        conn.send(out)


def run_deep(texts: list[str], timeout: float, gib: float) -> int:
    """check -> run 2 steps -> sample -> eval on each text in a worker process under an
    address-space cap; a case past 3 x `timeout` is a hang (the worker is killed and
    replaced), a worker that dies is a kill. Prints the tally and returns the number of
    bad outcomes (internal errors, tracebacks, hangs, kills)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    tally: collections.Counter = collections.Counter()
    worst: list[tuple[str, str, str]] = []
    proc = conn = None
    t0 = time.perf_counter()
    for i, text in enumerate(texts):
        if proc is None:
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, gib), daemon=True)
            proc.start()
        conn.send(text)
        ok = conn.poll(3 * timeout + 30)  # + the first case's imports
        try:
            got = conn.recv() if ok else None
        except EOFError:
            got = "killed"
        if not isinstance(got, list):
            what = "hang" if got is None else "killed"
            tally[what] += 1
            worst.append((what, "case", text[:300]))
            proc.kill()
            proc.join()
            proc = None
            continue
        for cmd, what, err in got:
            tally[f"{cmd}: {what}"] += 1
            if what not in ("ok", "diagnostic"):
                worst.append((what, cmd, err + "\n" + text[:300]))
        if (i + 1) % 25 == 0 or i + 1 == len(texts):
            print(f"  deep {i + 1}/{len(texts)} ({time.perf_counter() - t0:.0f} s): {dict(tally)}", flush=True)
    if proc is not None:
        proc.kill()
    print(f"deep: {len(texts)} mutants that check, run -> sample -> eval, in {time.perf_counter() - t0:.0f} s "
          f"(cap {3 * timeout:.0f} s per mutant and {gib:.0f} GiB)")
    for k, n in sorted(tally.items()):
        print(f"  {k}: {n}")
    for what, cmd, info in worst[:5]:
        print(f"---- {what} in {cmd}:\n{info}")
    return len(worst)


if __name__ == "__main__":
    sys.exit(main())
