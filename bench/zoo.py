"""The model zoo: train every shipped spec with its documented budget and compare with
reference numbers, writing a markdown table (docs/zoo.md by default).

    python bench/zoo.py                  # everything (about an hour on one CPU thread)
    python bench/zoo.py --only realnvp hvae
    python bench/zoo.py --only nsf --update   # re-measure some rows, keep the table's others
    python bench/zoo.py --quick          # a few steps each: checks the pipeline, not quality

Entries (test NLL per example in nats unless noted; references measured with plain
PyTorch or zuko on this kind of machine, as given in the project's issue):
  realnvp / maf on 8gaussians and moons, exact likelihood
  hvae on binarised digits, IWAE k = 1000
  autoregressive on binarised digits, exact
  schrodinger_bridge on moons, bridge_moons_8gaussians from 8gaussians to moons: sliced
    2-Wasserstein to the test data after each IPF round (summary.json's `rounds`)
  ddpm on each of the 8 toy sets, IWAE k = 20
  ddpm_digits on the 17-level digits, bits/dim with the discretised decoder, IWAE k = 100;
    reference: independent per-pixel categoricals fitted to the training images
  ddpm_digits_cond, the same given the class label: -log p(x | y) per class, averaged
  transformer_digits, a causal transformer over the 17-level pixels, exact, bits/dim;
    reference: MADE on the same levels
  mle_gfn on 8gaussians, IWAE k = 20
  ddpm_v (cosine, v-prediction, learned variance, T = 50) on 8gaussians, IWAE k = 20;
    reference: ddpm.gfn (linear, eps, T = 100) at the same budget
  nsf (6 rational-quadratic spline couplings) on 8gaussians, exact; reference: zuko's
    NSF at 2000 steps (the project's figure; bench/nsf.py measures zuko side by side)
  flow_matching (cfm with minibatch OT, RK4 over 20 steps) on moons, the ODE's likelihood;
    reference: TorchCFM's 2-D tutorial at 1000 iterations (the project's figure)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gfdsl.engine.evaluate import estimator_label  # noqa: E402
from gfdsl.engine.loop import train  # noqa: E402
from gfdsl.engine.rundir import RunOptions  # noqa: E402

TOYS = ["8gaussians", "2spirals", "checkerboard", "moons", "pinwheel", "rings", "swissroll", "circles"]
BASELINE = "baseline"  # the reference is the run's own summary.json `baselines` (gfdsl.engine.baselines)


def variant(spec: str, tmp: Path, data: str | None = None, extra: dict | None = None) -> Path:
    """A copy of a shipped spec on another toy data set and/or with train settings changed."""
    text = (ROOT / "specs" / f"{spec}.gfn").read_text()
    if data:
        text = re.sub(r'toy2d\(name = "[^"]+"\)', f'toy2d(name = "{data}")', text)
    for k, v in (extra or {}).items():
        text = re.sub(rf"(\n\s*){k}\s*=\s*[^\n#]+", rf"\g<1>{k} = {v}", text) if re.search(rf"\n\s*{k}\s*=", text) \
            else text.replace("  train {", f"  train {{\n    {k} = {v}", 1)
    p = tmp / f"{spec}_{data or 'default'}_{abs(hash(json.dumps(extra, sort_keys=True))) % 10**6}.gfn"
    p.write_text(text)
    return p


def run(spec_path: Path, out: Path, quick: bool, val: float | None = None, **kw) -> dict:
    """Train one entry. With `val`, that share of the training set is held out, scored 20
    times along the budget, and the test figures are those of the best validation point:
    the budget is chosen on validation, never on the test set."""
    opts = RunOptions(out=str(out), progress=False, **kw)
    overrides = {}
    if quick:  # the pipeline, not quality: a few steps, points and samples
        opts.steps, opts.eval_n, opts.eval_k, opts.samples = 3, 20, 2, 64
    if val:
        steps = opts.steps or int(re.search(r"\n\s*steps\s*=\s*(\d+)", spec_path.read_text()).group(1))
        opts.val, overrides["val_every"] = val, max(1, steps // 20)
    return train(str(spec_path), opts, overrides)


def entries(quick: bool, tmp: Path, only: set[str] | None):
    # name, spec file, data, reference, goal, note, extra run options
    todo = [
        ("realnvp", variant("realnvp", tmp), "8gaussians", 2.99, 3.00, "zuko RealNVP", {}),
        ("realnvp", variant("realnvp", tmp, "moons"), "moons", 2.43, 2.45, "zuko RealNVP", {}),
        ("maf", variant("maf", tmp, "8gaussians"), "8gaussians", 2.99, None, "zuko RealNVP", {}),
        ("maf", variant("maf", tmp), "moons", 2.43, None, "zuko RealNVP", {}),
        ("hvae", variant("hvae", tmp), "digits (binary)", 16.96, 17.5, "hand-written 2-level VAE; "
         "independent Bernoulli 25.08", {"eval_k": 1000, "eval_n": None}),
        ("autoregressive", variant("autoregressive", tmp), "digits (binary)", 17.30, 17.5, "MADE",
         {"eval_n": None}),
        ("mle_gfn", variant("mle_gfn", tmp), "8gaussians", 3.03, None, "hand-written DDPM (T = 100)",
         {"eval_k": 20}),
        ("ddpm_digits", variant("ddpm_digits", tmp), "digits (17 levels)", BASELINE, 2.1,
         "independent per-pixel categoricals (add-1/2 counts of the training images)",
         {"eval_k": 100, "eval_n": None}),
        ("transformer_digits", variant("transformer_digits", tmp), "digits (17 levels)", 2.144, None,
         "MADE on the same 17 levels (the autoregressive spec with cat(17) pixels, 500 steps)",
         {"eval_n": None}),
        ("ddpm_digits_cond", variant("ddpm_digits_cond", tmp), "digits (17 levels) given the class",
         BASELINE, None, "-log p(x | y), the mean over the classes' test images; compare "
         "ddpm_digits' -log p(x)", {"eval_k": 100, "eval_n": None}),
        ("ddpm_v", variant("ddpm_v", tmp), "8gaussians", 2.914, 2.95, "specs/ddpm.gfn (linear, eps, T = 100)", {}),
        ("nsf", variant("nsf", tmp), "8gaussians", 2.87, 2.87, "zuko NSF at 2000 steps", {}),
        ("flow_matching", variant("flow_matching", tmp), "moons", 3.10, 3.10,
         "TorchCFM's tutorial figure; bench/flow_matching/run.py runs TorchCFM side by side", {}),
    ] + [("ddpm", variant("ddpm", tmp, d), d, 3.03 if d == "8gaussians" else None,
          3.10 if d == "8gaussians" else None, "hand-written DDPM" if d == "8gaussians" else "", {})
         for d in TOYS]
    for e in todo:
        if only is None or e[0] in only:
            yield e


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default=str(ROOT / "docs" / "zoo.md"))
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--val", type=float, default=None,
                    help="hold out this share of the training set and report the best validation point's test "
                         "figures (the budget chosen on validation)")
    ap.add_argument("--update", action="store_true",
                    help="keep the rows of the table at --out that this run does not re-measure")
    ap.add_argument("--from-json", nargs="+", metavar="FILE",
                    help="train nothing: write the table from results saved by earlier --json runs")
    a = ap.parse_args()
    if a.from_json:
        rows = [r for f in a.from_json for r in json.loads(Path(f).read_text())]
        Path(a.out).write_text(table(rows, False))
        print(f"wrote {a.out}")
        return 0
    torch.set_num_threads(1)
    only = set(a.only) if a.only else None
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i, (name, spec, data, ref, goal, note, kw) in enumerate(entries(a.quick, tmp, only)):
            t = time.perf_counter()
            s = run(spec, tmp / f"run{i}", a.quick, a.val, **kw)
            est = estimator_label(s["nll_estimator"])
            ours = s["test_nll_nats"]
            if "test_bpd" in s and "digits" in name:  # images are compared in bits per pixel
                ours, est = s["test_bpd"], est + ", bits/dim"
            base = s.get("baselines") or {}
            if ref == BASELINE:
                ref = base.get("independent_pixels_bpd")
            v = s.get("validation") or {}
            if v.get("best_step"):
                note = (note + "; " if note else "") + (f"best of {s['steps_done']} steps on a {v['fraction']:.0%} "
                                                         f"validation split: step {v['best_step']}")
            row = dict(spec=name, data=data, steps=v.get("best_step") or s["steps"],
                       seconds=round(time.perf_counter() - t, 1),
                       ours=ours, estimator=est, n_eval=s["n_eval"], reference=ref, goal=goal,
                       note=note, entropy=base.get("data_entropy_nats"))
            rows.append(row)
            print(json.dumps(row), flush=True)
        for name, data in (("schrodinger_bridge", "moons"), ("bridge_moons_8gaussians", "8gaussians -> moons")):
            if only is None or name in only:
                rows.append(ipf(name, data, tmp, a.quick))
                print(json.dumps(rows[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    if a.update and Path(a.out).exists():
        rows = merged(Path(a.out).read_text(), rows)
    Path(a.out).write_text(table(rows, a.quick))
    print(f"wrote {a.out}")
    return 0


def ipf(name: str, data: str, tmp: Path, quick: bool) -> dict:
    """A bridge trained by IPF: the sliced W2 of 2000 samples to the test data after every
    round, as the engine logs it (summary.json's `rounds`)."""
    text = (ROOT / "specs" / f"{name}.gfn").read_text()
    rounds = int(re.search(r"ipf\(rounds = (\d+)\)", text).group(1))
    steps = rounds * 2 if quick else int(re.search(r"steps\s*=\s*(\d+)", text).group(1))
    spec = variant(name, tmp, extra={"steps": steps})
    t = time.perf_counter()
    s = train(str(spec), RunOptions(out=str(tmp / name), progress=False, eval_n=20 if quick else 2000,
                                    eval_k=2 if quick else 20, samples=64 if quick else None))
    w2 = [(r["round"], r["sliced_w2"]) for r in s["rounds"]]
    nll = f"; test NLL {s['test_nll_nats']:.3f} (IWAE k={s['nll_estimator'].get('k')})" if "test_nll_nats" in s else ""
    return dict(spec=name, data=data, steps=s["steps"], seconds=round(time.perf_counter() - t, 1),
                ours=w2[-1][1], estimator="sliced W2", n_eval=2000, reference=w2[0][1], goal=None,
                note="W2 per IPF round: " + ", ".join(f"{r}: {v:.3f}" for r, v in w2)
                     + "; reference = round 1" + nll, entropy=None)


def merged(old_table: str, rows: list) -> list:
    """The old table's rows, each replaced by this run's row of the same spec and data,
    then this run's new rows; an old row stays as it was printed (its cells as text)."""
    new = {(r["spec"], r["data"]): r for r in rows}
    out = []
    for line in old_table.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # a cell's own | is \|
        if len(cells) != 11 or cells[0] in ("spec", "---"):
            continue
        key = (cells[0], cells[1])
        out.append(new.pop(key) if key in new else dict(zip(COLUMNS, cells), printed=line))
    return out + list(new.values())


COLUMNS = ("spec", "data", "steps", "seconds", "ours", "estimator", "reference", "goal", "met", "entropy", "note")


def table(rows, quick: bool) -> str:
    out = ["# Model zoo", "",
           "Produced by `python bench/zoo.py" + (" --quick" if quick else "") + "` on one CPU thread. Test NLL per "
           "example in nats (lower is better) unless the estimator says otherwise; a goal is the bound the "
           "project set, the reference the figure it was set from. Rows whose note says \"best of N steps on a "
           "validation split\" were measured with `--val 0.1`: 10% of the training set held out and scored 20 "
           "times along the budget, the test figures those of the best validation point (its step in the steps "
           "column), so the budget was chosen on validation, never on the test set.", "",
           "| spec | data | steps | seconds | ours | estimator | reference | goal | met | data entropy | note |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "printed" in r:
            out.append(r["printed"])
            continue
        met = "" if r["goal"] is None else ("yes" if r["ours"] <= r["goal"] else "**no**")
        if r["spec"] == "schrodinger_bridge":
            met = "yes" if r["ours"] < r["reference"] else "**no**"
        f = lambda v: "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|")  # noqa: E731
        out.append(f"| {r['spec']} | {r['data']} | {r['steps']} | {r['seconds']} | {f(r['ours'])} | {r['estimator']} "
                   f"| {f(r['reference'])} | {f(r['goal'])} | {met} | {f(r['entropy'])} | {f(r['note'])} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
