"""The neural spline flow of specs/nsf.gfn against zuko's NSF of the same shape, side by
side: both trained with exact maximum likelihood on the same 8gaussians batches (Adam,
the spec's lr and batch, one thread), in alternating blocks of steps so machine noise
hits both alike. Prints steps/s of each, their ratio, and the exact test NLL (nats) of
each on the spec's 2000 test points at equal steps.

    python bench/nsf.py [--steps 2000 --block 100]

The zuko side is `zuko.flows.NSF(features = 2, transforms = K, bins = B, hidden_features
= (H, H), passes = 2)`: coupling transforms, the spec's layer count, bins and widths.
`--reference` also trains zuko's default NSF (3 autoregressive transforms, (64, 64)) the
same way. zuko is a benchmark-only dependency: `pip install zuko` (or `.[bench]`).
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
sys.path.insert(0, str(ROOT / "bench"))

from gfdsl.compile.lower import lower  # noqa: E402
from gfdsl.driver import check_file  # noqa: E402
from gfdsl.engine.rundir import load_data  # noqa: E402
from common import peer  # noqa: E402


def spec_dims(c) -> dict:
    G = c.graph.graph
    fwd = next(kk for kk in G["kernels"].values() if kk["entry"] == "spline_coupling")
    net = G["nets"][str(fwd["args"]["net"])]
    return {"K": sum(kk["entry"] == "spline_coupling" for kk in G["kernels"].values()),
            "bins": fwd["args"]["bins"], "hidden": tuple(net["args"]["hidden"]),
            "lr": G["train"]["lr"], "batch": G["train"]["batch"]}


def zuko_nsf(transforms: int, bins: int, hidden: tuple, passes: int | None):
    import zuko

    torch.manual_seed(0)
    f = zuko.flows.NSF(features=2, transforms=transforms, bins=bins, hidden_features=hidden, passes=passes)
    return f, lambda x: -f().log_prob(x).mean(), lambda x: f().log_prob(x)


def train_side_by_side(models: dict, train: torch.Tensor, steps: int, block: int, batch: int, lr: float) -> dict:
    """name -> (module, loss, log_prob); the same batch goes to every model at a step."""
    opts = {k: torch.optim.Adam(m.parameters(), lr=lr) for k, (m, _, _) in models.items()}
    secs = {k: 0.0 for k in models}
    g = torch.Generator().manual_seed(0)
    names = list(models)
    for b in range(steps // block):
        batches = [train[torch.randint(0, train.shape[0], (batch,), generator=g)] for _ in range(block)]
        for k in (names if b % 2 == 0 else names[::-1]):
            m, loss_fn, _ = models[k]
            t0 = time.perf_counter()
            for x in batches:
                loss = loss_fn(x)
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
            secs[k] += time.perf_counter() - t0
    return {k: steps / s for k, s in secs.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--reference", action="store_true", help="also zuko's default NSF (3 autoregressive transforms)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    zuko = peer("zuko")
    if zuko is None:
        return 1
    c = check_file(ROOT / "specs" / "nsf.gfn")
    d = spec_dims(c)
    train, test, _ = load_data(c)
    torch.manual_seed(0)
    m = lower(c.graph, c.source)
    models = {"gfdsl": (m, lambda x: m.loss(x)[0], lambda x: m.log_likelihood(x, k=1)),
              "zuko": zuko_nsf(d["K"], d["bins"], d["hidden"], passes=2)}
    if a.reference:
        models["zuko_default"] = zuko_nsf(3, 8, (64, 64), passes=None)
    speed = train_side_by_side(models, train, a.steps, a.block, d["batch"], d["lr"])
    out = {"steps": a.steps, "batch": d["batch"], "lr": d["lr"], "torch": torch.__version__,
           "zuko": zuko.__version__, "models": {}}
    print(f"NSF on 8gaussians: {d['K']} coupling layers, {d['bins']} bins, hidden {d['hidden']}, "
          f"batch {d['batch']}, lr {d['lr']}, {a.steps} steps, 1 thread, torch {torch.__version__}, zuko {zuko.__version__}")
    for k, (mod, _, log_prob) in models.items():
        with torch.no_grad():
            nll = float(-log_prob(test).mean())
        n = sum(p.numel() for p in mod.parameters())
        out["models"][k] = {"steps_per_second": speed[k], "test_nll_nats": nll, "parameters": n}
        print(f"  {k:13s} {speed[k]:7.1f} steps/s  test NLL {nll:.4f} nats  ({n:,} parameters)")
    out["ratio"] = speed["gfdsl"] / speed["zuko"]
    print(f"  ratio gfdsl / zuko = {out['ratio']:.3f} steps/s (same shape, same batches)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
