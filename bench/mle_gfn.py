"""Does a learned backward policy trained with TBC beat a fixed-noise diffusion model?

The experiment of Zhang, Chen, Malkin & Bengio (arXiv:2209.02606, Algorithm 1, Table 1)
with gfdsl alone. For each 2-D data set, step count T and seed, two models with the same
P_F network, the same number of gradient steps and the same batch:

  DDPM     specs/mle_gfn.gfn with the fixed noising kernel as P_B, objective elbo
  MLE-GFN  specs/mle_gfn.gfn as shipped: learned P_B, elbo + lambda * tbc(k = 2)

The MLE-GFN configuration is chosen per (data set, T) on a validation set (fresh
samples of the same density, another generator seed) from seed-0 runs, then used for
every seed. Candidates: the shipped spec (the ELBO trains P_F, TBC trains P_B), and
`elbo(train = "both") + lambda * tbc` for each lambda (P_B trained by the reparameterised
ELBO and TBC). In the shipped form lambda has no effect under Adam: TBC is the only
gradient P_B receives, and Adam's update does not depend on a gradient's scale, which
is why lambda is only searched where it trades two gradients off. Test
NLL is the importance-weighted bound with K backward trajectories per test point
(Burda et al. 2016), in nats. Results are appended to a JSON file as each run finishes,
so a long grid can be stopped and resumed (`--resume`).

    python bench/mle_gfn.py --quick                  # minutes: tiny budgets (CI runs this)
    python bench/mle_gfn.py --steps 1500 --json runs/mle_gfn.json --md docs/mle_gfn_table.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPEC = ROOT / "specs" / "mle_gfn.gfn"
DATASETS = ("8gaussians", "2spirals", "checkerboard", "moons")


def spec_text(model: str, dataset: str, config: str = "pb-only") -> str:
    text = SPEC.read_text()
    if dataset == "digits":  # the image analogue: 17 grey levels, discretised decoder, bits/dim
        text = text.replace('toy2d(name = "8gaussians")', "digits(binarize = false)")
        text = re.sub(r"\n(\s*)D(\s*)= 2\b", r"\n\1D\2= 64", text)
        text = text.replace("ddpm_denoiser(net = eps, schedule = beta)",
                            "ddpm_denoiser(net = eps, schedule = beta, levels = 17)")
    text = text.replace('toy2d(name = "8gaussians")', f'toy2d(name = "{dataset}")')
    if model == "mle_gfn" and config.startswith("both"):
        text = text.replace('elbo(train = "pf")', 'elbo(train = "both")')
    if model == "ddpm":
        text = re.sub(r"backward = learned_noising\([^)]*\)", "backward = ddpm_noising(schedule = beta)", text)
        text = re.sub(r"objective = [^\n]*", 'objective = elbo(train = "pf")', text)
        text = re.sub(r"\n\s*net pb = [^\n]*", "", text)
    return text


def data(dataset: str, n_val: int):
    from gfdsl.library.datasets import DigitsArgs
    from gfdsl.runtime.data import load, toy2d

    if dataset == "digits":  # 1797 images: the test split of the specs, validation carved from training
        tr, te = load({"entry": "digits", "args": DigitsArgs(binarize=False).model_dump()},
                      {"dtype": "real", "shape": [64]}, ROOT)
        return tr[n_val:], tr[:n_val], te

    tr = toy2d(dataset, 50_000, np.random.default_rng(0))
    te = toy2d(dataset, 10_000, np.random.default_rng(10_000))  # never seen in training
    va = toy2d(dataset, n_val, np.random.default_rng(20_000))  # for choosing lambda only
    return (torch.tensor(v, dtype=torch.float32) for v in (tr, va, te))


def build(model: str, dataset: str, T: int, seed: int, config: str = "pb-only", lam: float | None = None):
    """One of the two models, lowered with parameters drawn from `seed`."""
    from gfdsl.driver import check_source
    from gfdsl.compile.lower import lower

    over = {"T": T, **({"lambda": lam} if model == "mle_gfn" and lam is not None else {})}
    c = check_source(spec_text(model, dataset, config), over)
    torch.manual_seed(seed)
    return lower(c.graph, c.source)


def adam(m):
    from gfdsl.engine.loop import make_optimizer

    return make_optimizer(torch.optim.Adam, [{"params": [p for p in m.parameters() if p.requires_grad], "lr": 1e-3}],
                          1e-3, 0.0)


def fit(m, x: torch.Tensor, steps: int, start: int, batch: int, gen, opt) -> None:
    """`steps` gradient steps on batches drawn from x, numbered from `start`."""
    m.train()
    for step in range(start, start + steps):
        b = x[torch.randint(0, x.shape[0], (batch,), generator=gen)]
        loss, _ = m.loss(b, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def train_eval(model: str, dataset: str, T: int, config: str, lam: float, seed: int, steps: int, batch: int,
               k: int, sets: dict, n_test: int) -> dict:
    m = build(model, dataset, T, seed, config, lam)
    m.objective.total_steps = steps
    opt = adam(m)
    t0 = time.perf_counter()
    fit(m, sets["train"], steps, 0, batch, torch.Generator().manual_seed(seed), opt)
    secs = time.perf_counter() - t0
    m.eval()
    torch.manual_seed(seed + 1)
    out = {"model": model, "dataset": dataset, "T": T, "config": config if model == "mle_gfn" else None,
           "lambda": lam if model == "mle_gfn" else None, "seed": seed,
           "steps": steps, "batch": batch, "train_seconds": secs, "k": k}
    out["val_nll"] = float(-m.log_likelihood(sets["val"], k=k).mean())
    out["test_nll"] = float(-m.log_likelihood(sets["test"][:n_test], k=k).mean())
    out["n_test"] = n_test
    if dataset == "digits":
        out["test_bpd"] = out["test_nll"] / (64 * math.log(2))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets: 2 data sets, T = 5, 1 seed, 30 steps")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS),
                    help=f"of {', '.join(DATASETS)}, and digits (8x8 images in 17 levels, bits/dim)")
    ap.add_argument("--T", nargs="+", type=int, default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lambdas", nargs="+", type=float, default=[0.1, 1.0])
    ap.add_argument("--k", type=int, default=1000, help="backward trajectories per point in the NLL bound")
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--json", default=None, help="append each finished run here")
    ap.add_argument("--rows-json", default=None, help="write the summary rows here")
    ap.add_argument("--resume", action="store_true", help="skip runs already in --json")
    ap.add_argument("--md", default=None, help="write the summary table here")
    a = ap.parse_args()
    if a.quick:
        a.datasets, a.T, a.seeds, a.steps, a.k, a.n_test, a.n_val = a.datasets[:2], [5], 1, 30, 20, 50, 50
    torch.set_num_threads(1)
    done: list[dict] = []
    if a.json and a.resume and Path(a.json).is_file():
        done = json.loads(Path(a.json).read_text())

    def run(model, ds, T, cfg, seed, sets):
        config, lam = cfg if model == "mle_gfn" else (None, None)
        key = (model, ds, T, config, lam, seed, a.steps)
        for r in done:
            if (r["model"], r["dataset"], r["T"], r["config"], r["lambda"], r["seed"], r["steps"]) == key:
                return r
        r = train_eval(model, ds, T, config, lam if lam is not None else 0.0, seed, a.steps, a.batch, a.k, sets,
                       a.n_test)
        done.append(r)
        print(f"{model:8s} {ds:12s} T={T:<3d} {config or '':14s} lambda={r['lambda']} seed={seed}: "
              f"test NLL {r['test_nll']:.4f} "
              f"(val {r['val_nll']:.4f}, {r['train_seconds']:.0f} s)", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(done, indent=1) + "\n")
        return r

    rows = []
    t0 = time.perf_counter()
    for ds in a.datasets:
        tr, va, te = data(ds, a.n_val)
        sets = {"train": tr, "val": va, "test": te}
        for T in a.T:
            # the configuration on the validation set, from seed-0 runs
            cfgs = [("pb-only", 1.0)] + [("both", lam) for lam in a.lambdas]
            cands = [(cfg, run("mle_gfn", ds, T, cfg, 0, sets)) for cfg in cfgs]
            best = min(cands, key=lambda c: c[1]["val_nll"])[0]
            base = [run("ddpm", ds, T, None, s, sets)["test_nll"] for s in range(a.seeds)]
            ours = [run("mle_gfn", ds, T, best, s, sets)["test_nll"] for s in range(a.seeds)]
            rows.append({"dataset": ds, "T": T, "config": best, "ddpm": base, "mle_gfn": ours,
                         "val": {f"{c[0]}{'' if c[0] == 'pb-only' else f' lambda={c[1]:g}'}": r["val_nll"]
                                 for c, r in cands}})
    table = markdown(rows, a, time.perf_counter() - t0)
    print("\n" + table)
    if a.md:
        Path(a.md).write_text(table)
    if a.rows_json:
        Path(a.rows_json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def _ms(v: list[float]) -> str:
    return f"{np.mean(v):.3f} +- {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def markdown(rows: list[dict], a, secs: float) -> str:
    out = [f"Test NLL in nats (importance-weighted, K = {a.k}, {a.n_test} test points), mean +- std over "
           f"{a.seeds} seed(s); {a.steps} steps of batch {a.batch} for both models; MLE-GFN configuration "
           f"chosen on a validation set (pb-only: the shipped spec; both: elbo(train = \"both\") + lambda * "
           f"tbc, lambda in {a.lambdas}); grid time {secs / 60:.1f} min on one thread.", "",
           "| data | T | DDPM (fixed P_B) | MLE-GFN (learned P_B + TBC) | configuration | difference | better |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = np.array(r["ddpm"]) - np.array(r["mle_gfn"])
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        verdict = "MLE-GFN" if d.mean() > 2 * se else "DDPM" if d.mean() < -2 * se else "neither (within 2 s.e.)"
        if len(d) == 1:
            verdict = "MLE-GFN" if d.mean() > 0 else "DDPM"
        cfg = r["config"][0] + ("" if r["config"][0] == "pb-only" else f", lambda {r['config'][1]:g}")
        bpd = ""
        if r["dataset"] == "digits":  # nats per image -> bits per pixel
            b = 64 * math.log(2)
            bpd = f" ({_ms([v / b for v in r['ddpm']])} vs {_ms([v / b for v in r['mle_gfn']])} bits/dim)"
        out.append(f"| {r['dataset']} | {r['T']} | {_ms(r['ddpm'])} | {_ms(r['mle_gfn'])} | {cfg} | "
                   f"{d.mean():+.3f}{bpd} | {verdict} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
