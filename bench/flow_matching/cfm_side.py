"""TorchCFM's side of bench/flow_matching/run.py; runs in bench/flow_matching/.venv
(torchcfm 1.0.7), without gfdsl. Trains the model of TorchCFM's 2-D tutorial -- its
MLP(dim = 2, w = 64, time_varying = True) (3 hidden SELU layers, t as an input) with
ExactOptimalTransportConditionalFlowMatcher(sigma = 0) -- on the batches of the training
set given, then scores the test set by the same estimator gfdsl uses: the ODE run back
from x(1) = x to t = 0 with RK4 over a fixed grid, log p(x) = log N(x(0)) - int div v dt,
the divergence exact (D = 2 backward passes). Prints one JSON line.

    cfm_side.py --train train.npy --test test.npy --iters 1000 --batch 256 --lr 3e-3 --steps 20
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch


def velocity_and_div(model, x, t):
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        v = model(torch.cat([x, t.expand(x.shape[0], 1)], 1))
        div = sum(torch.autograd.grad(v[:, d].sum(), x, retain_graph=True)[0][:, d] for d in range(x.shape[1]))
    return v.detach(), div.detach()


def log_likelihood(model, x, steps: int) -> torch.Tensor:
    """RK4 from t = 1 back to t = 0 on the augmented state (x, int div v dt)."""
    h = -1.0 / steps
    acc = torch.zeros(x.shape[0])
    for j in range(steps):
        t = torch.tensor([[1.0 + j * h]])
        k1, d1 = velocity_and_div(model, x, t)
        k2, d2 = velocity_and_div(model, x + 0.5 * h * k1, t + 0.5 * h)
        k3, d3 = velocity_and_div(model, x + 0.5 * h * k2, t + 0.5 * h)
        k4, d4 = velocity_and_div(model, x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        acc = acc + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)  # = -int_t^{t+|h|} div v dt
    return -0.5 * (x ** 2).sum(1) - x.shape[1] * 0.5 * math.log(2 * math.pi) + acc


def main() -> None:
    import torchcfm
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher
    from torchcfm.models.models import MLP

    ap = argparse.ArgumentParser()
    for name, kind in (("--train", str), ("--test", str), ("--iters", int), ("--batch", int), ("--lr", float),
                       ("--steps", int), ("--seed", int), ("--width", int)):
        ap.add_argument(name, type=kind, required=name in ("--train", "--test"))
    ap.set_defaults(iters=1000, batch=256, lr=3e-3, steps=20, seed=0, width=64)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    train = torch.tensor(np.load(a.train), dtype=torch.float32)
    test = torch.tensor(np.load(a.test), dtype=torch.float32)
    model = MLP(dim=2, w=a.width, time_varying=True)
    fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    g = torch.Generator().manual_seed(a.seed)
    idx = [torch.randint(0, train.shape[0], (a.batch,), generator=g) for _ in range(a.iters)]
    t0 = time.perf_counter()
    for j in range(a.iters):
        x1 = train[idx[j]]
        x0 = torch.randn_like(x1)
        t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
        loss = ((model(torch.cat([xt, t[:, None]], 1)) - ut) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    secs = time.perf_counter() - t0
    with torch.no_grad():
        nll = float(-log_likelihood(model, test, a.steps).mean())
    print(json.dumps({"iters_per_second": a.iters / secs, "seconds": secs, "test_nll_nats": nll,
                      "parameters": sum(p.numel() for p in model.parameters()), "torchcfm": torchcfm.__version__,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
