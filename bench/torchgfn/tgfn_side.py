"""The torchgfn side of bench/torchgfn: TB on the hypergrid, as torchgfn's own examples
train it (KHot preprocessor, separate 2x256 ReLU MLPs for P_F and P_B, log Z at lr 0.1).

Runs inside torchgfn's own virtual environment (bench/torchgfn/run.py makes it); prints
one JSON line: iterations/second, and writes the trained P_F logits over every state (in
gfdsl's enumeration order) so that gfdsl's exact evaluator scores both libraries alike.

    python tgfn_side.py --ndim 2 --height 8 --batch 16 --iters 1000 --seed 0 --out logits.npy
"""

import argparse
import json
import time

import numpy as np
import torch
from gfn.estimators import DiscretePolicyEstimator
from gfn.gflownet import TBGFlowNet
from gfn.gym import HyperGrid
from gfn.preprocessors import KHotPreprocessor
from gfn.utils.modules import MLP


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ndim", type=int, default=2)
    p.add_argument("--height", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--r0", type=float, default=0.1)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    env = HyperGrid(ndim=a.ndim, height=a.height,
                    reward_fn_kwargs={"R0": a.r0, "R1": 0.5, "R2": 2.0}, validate_modes=False)
    pre = KHotPreprocessor(height=a.height, ndim=a.ndim)
    pf_net = MLP(input_dim=pre.output_dim, output_dim=env.n_actions, hidden_dim=256, n_hidden_layers=2)
    pb_net = MLP(input_dim=pre.output_dim, output_dim=env.n_actions - 1, hidden_dim=256, n_hidden_layers=2)
    pf = DiscretePolicyEstimator(pf_net, env.n_actions, preprocessor=pre, is_backward=False)
    pb = DiscretePolicyEstimator(pb_net, env.n_actions, preprocessor=pre, is_backward=True)
    gfn = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
    opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=1e-3)
    opt.add_param_group({"params": gfn.logz_parameters(), "lr": 0.1})

    def step() -> None:
        traj = gfn.sample_trajectories(env, n=a.batch, save_logprobs=True)
        loss = gfn.loss(env, traj, recalculate_all_logprobs=False)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    dt = time.perf_counter() - t0
    if a.out:
        # every state in gfdsl's order: coordinate i of state k is (k // H^i) % H
        k = torch.arange(a.height ** a.ndim)[:, None]
        S = (k // a.height ** torch.arange(a.ndim)[None, :]) % a.height
        with torch.no_grad():
            enc = torch.nn.functional.one_hot(S, a.height).flatten(1).float()
            logits = pf_net(enc)
        np.save(a.out, logits.numpy().astype(np.float64))
    print(json.dumps({"lib": "torchgfn", "it_per_s": a.iters / dt, "seconds": dt,
                      "log_z": float(gfn.logZ.detach()), "iters": a.iters + a.warmup}))


if __name__ == "__main__":
    main()
