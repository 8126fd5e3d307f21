"""Choose a data-trained spec's step budget on a validation split, never on the test set.

A seeded fraction of the spec's training examples is held out; the model trains on the
rest with the spec's optimizer settings (Adam at its lr and batch, its EMA where it
declares one), and every --every steps the validation NLL is measured (IWAE with --k
trajectories, the EMA weights where kept). The budget with the lowest validation NLL is
printed: set it as the spec's `steps`, then `gfdsl run` trains on all training examples
and reports the test NLL.

    python bench/validation_budget.py specs/ddpm_digits.gfn [--fraction 0.1 --every 1000
        --max-steps 12000 --k 20 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gfdsl.compile.lower import lower  # noqa: E402
from gfdsl.driver import check_file  # noqa: E402
from gfdsl.engine.ema import EMA  # noqa: E402
from gfdsl.engine.rundir import load_data  # noqa: E402


def split(train: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(fraction * train.shape[0]))
    return train[perm[n_val:]], train[perm[:n_val]]


def nll(model, x: torch.Tensor, k: int, ema: EMA | None) -> float:
    model.eval()
    torch.manual_seed(1)
    if ema is None:
        v = float(-model.log_likelihood(x, k=k).mean())
    else:
        with ema.applied():
            v = float(-model.log_likelihood(x, k=k).mean())
    model.train()
    return v


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--max-steps", type=int, default=12000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    c = check_file(a.spec)
    s = c.graph.graph["train"]
    train, _test, _ = load_data(c)  # the test split is never read here
    fit, val = split(train, a.fraction, a.seed)
    torch.manual_seed(a.seed)
    m = lower(c.graph, c.source)
    opt = torch.optim.Adam(m.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    ema = EMA(m, s["ema"]) if s["ema"] else None
    g = torch.Generator().manual_seed(a.seed)
    rows, t0 = [], time.perf_counter()
    print(f"{a.spec}: {fit.shape[0]} training, {val.shape[0]} validation examples; batch {s['batch']}, "
          f"lr {s['lr']}, ema {s['ema']}; validation NLL by IWAE k = {a.k}", flush=True)
    for step in range(1, a.max_steps + 1):
        loss, _ = m.loss(fit[torch.randint(0, fit.shape[0], (s["batch"],), generator=g)], step - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update()
        if step % a.every == 0:
            v = nll(m, val, a.k, ema)
            bpd = v / (val.shape[1] * 0.6931471805599453)
            rows.append({"step": step, "val_nll_nats": v, "val_bits_per_dim": bpd,
                         "seconds": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    best = min(rows, key=lambda r: r["val_nll_nats"])
    print(f"best budget on validation: {best['step']} steps (validation NLL {best['val_nll_nats']:.3f} nats, "
          f"{best['val_bits_per_dim']:.3f} bits/dim)")
    if a.json:
        Path(a.json).write_text(json.dumps({"spec": a.spec, "fraction": a.fraction, "k": a.k, "rows": rows,
                                            "best_steps": best["step"]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
