"""Conditional models measured: the class-conditional digits DDPM judged by a classifier
trained on real digits, and the temperature-conditioned hypergrid against unconditional
models of each R^beta.

    python bench/conditional.py digits [--run RUN]   # trains specs/ddpm_digits_cond.gfn unless RUN is given
    python bench/conditional.py hypergrid [--steps 3000] [--seeds 0 1 2]

digits: scikit-learn's LogisticRegression is fitted to the training split of the real
digits (never to generated images) and labels n samples drawn given each class, without
guidance (s = 1) and with s = 2 and 3; printed per class, with the classifier's own
accuracy on the real test images as the ceiling. The run's summary holds -log p(x | y).

hypergrid: one hypergrid_cond model trained for N steps, beside three unconditional
hypergrid models, one per beta in {0.5, 1, 2}, whose reward is the table of R(x)^beta
(`table(file, log = true)`), each trained N / 3 steps (equal total steps) and N steps;
exact L1 of P_T against R^beta / Z(beta), and |log Z - log Z(beta)|. The unconditional
models take the conditional spec's learning-rate schedule (lr_decay).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gfdsl.compile.lower import lower  # noqa: E402
from gfdsl.driver import check_file  # noqa: E402
from gfdsl.engine.evaluate import draw_given  # noqa: E402
from gfdsl.engine.loop import train  # noqa: E402
from gfdsl.engine.rundir import RunOptions, load_data, load_model  # noqa: E402

BETAS = (0.5, 1.0, 2.0)


def digits(run: str | None, n: int, guidance: list[float]) -> dict:
    from sklearn.linear_model import LogisticRegression

    if run is None:
        run = tempfile.mkdtemp(prefix="ddpm_digits_cond_")
        t = time.perf_counter()
        train(str(ROOT / "specs" / "ddpm_digits_cond.gfn"), RunOptions(out=run + "/run", progress=False))
        run += "/run"
        print(f"trained in {time.perf_counter() - t:.0f} s: {run}", flush=True)
    c, model, step, inputs = load_model(Path(run))
    model.eval()
    train_x, test_x, (train_y, test_y) = load_data(c, inputs)
    clf = LogisticRegression(max_iter=5000).fit(train_x.numpy(), train_y.numpy())
    real = clf.predict(test_x.numpy()) == test_y.numpy()
    out = {"run": run, "step": step, "classifier_test_accuracy": float(real.mean()),
           "classifier_per_class": [float(real[test_y.numpy() == k].mean()) for k in range(10)], "guided": {}}
    summary = json.loads((Path(run) / "summary.json").read_text())
    out["test_bpd"] = summary.get("test_bpd")
    out["test_bpd_per_class"] = {k: v.get("test_bpd") for k, v in summary.get("conditions", {}).items()}
    points = [{"y": k} for k in range(10)]
    for s in guidance:
        torch.manual_seed(0)
        x = draw_given(model, n, points, None if s == 1 else s)  # (10, n, 64)
        pred = clf.predict(x.reshape(10 * n, -1)).reshape(10, n)
        acc = [float((pred[k] == k).mean()) for k in range(10)]
        out["guided"][f"{s:g}"] = {"per_class": acc, "mean": statistics.mean(acc), "min": min(acc)}
        print(f"guidance {s:g}: mean {statistics.mean(acc):.3f}, min {min(acc):.3f}, per class "
              + " ".join(f"{a:.2f}" for a in acc), flush=True)
    return out


def _table(tmp: Path, beta: float) -> Path:
    """A copy of specs/hypergrid.gfn whose reward is the table of log R(x)^beta."""
    base = check_file(ROOT / "specs" / "hypergrid.gfn")
    m = lower(base.graph, base.source)
    log_r = m.reward(m.space.space.enumerate()).double().numpy()
    d = tmp / f"beta{beta:g}"
    d.mkdir(exist_ok=True)
    np.save(d / "log_r.npy", beta * log_r)
    text = (ROOT / "specs" / "hypergrid.gfn").read_text()
    old = "reward = hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0)"
    assert old in text
    (d / "hg.gfn").write_text(text.replace(old, 'reward = table(file = "log_r.npy", log = true)'))
    return d / "hg.gfn"


def _fig(s: dict) -> dict:
    return {"exact_l1": s["exact_l1"], "log_z_error": s["log_z_error"]}


def hypergrid(steps: int, seeds: list[int]) -> dict:
    rows = {"cond": [], "uncond_equal_total": [], "uncond_equal_each": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        specs = {b: _table(tmp, b) for b in BETAS}
        # the unconditional models train as the conditional spec does (its lr_decay), so
        # that the comparison is of the conditioning alone
        same = {"lr_decay": check_file(ROOT / "specs" / "hypergrid_cond.gfn").graph.graph["train"]["lr_decay"]}
        for seed in seeds:
            t = time.perf_counter()
            s = train(str(ROOT / "specs" / "hypergrid_cond.gfn"),
                      RunOptions(steps=steps, seed=seed, out=str(tmp / f"c{seed}"), progress=False))
            rows["cond"].append({"seed": seed, "seconds": time.perf_counter() - t,
                                 **{f"{b:g}": _fig(s["conditions"][f"beta={b:g}"]) for b in BETAS}})
            print(json.dumps({"cond": rows["cond"][-1]}), flush=True)
            for key, n in (("uncond_equal_total", steps // 3), ("uncond_equal_each", steps)):
                row = {"seed": seed, "steps_each": n}
                for b in BETAS:
                    u = train(str(specs[b]), RunOptions(steps=n, seed=seed, out=str(tmp / f"u{key}{b}{seed}"),
                                                        progress=False), dict(same))
                    row[f"{b:g}"] = _fig(u)
                rows[key].append(row)
                print(json.dumps({key: row}), flush=True)
    summary = {}
    for key, rs in rows.items():
        summary[key] = {f"{b:g}": {m: (statistics.mean(r[f"{b:g}"][m] for r in rs),
                                       statistics.pstdev(r[f"{b:g}"][m] for r in rs)) for m in ("exact_l1", "log_z_error")}
                        for b in BETAS}
    for b in BETAS:
        c, u = summary["cond"][f"{b:g}"]["exact_l1"][0], summary["uncond_equal_total"][f"{b:g}"]["exact_l1"][0]
        print(f"beta {b:g}: L1 conditional {c:.3f}, unconditional at equal total steps {u:.3f}, ratio {c / u:.2f}, "
              f"unconditional at {steps} steps each {summary['uncond_equal_each'][f'{b:g}']['exact_l1'][0]:.3f}")
    return {"steps": steps, "seeds": seeds, "runs": rows, "summary": summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("digits")
    a.add_argument("--run", help="a finished run of specs/ddpm_digits_cond.gfn (default: train one)")
    a.add_argument("-n", type=int, default=100, help="samples per class")
    a.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    h = sub.add_parser("hypergrid")
    h.add_argument("--steps", type=int, default=3000)
    h.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for p in (a, h):
        p.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = digits(args.run, args.n, args.guidance) if args.what == "digits" else hypergrid(args.steps, args.seeds)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
