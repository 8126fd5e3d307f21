"""The torchgfn side of bench/diffusion_sampler.py: a diffusion sampler of the 25-Gaussian
grid trained by trajectory balance, as torchgfn 2.4.1's estimators set it up (the PIS
net DiffusionPISGradNetForward, the pinned-Brownian-motion forward and fixed backward
estimators, TBGFlowNet, log Z at its own learning rate), on-policy.

Runs inside torchgfn's own virtual environment (bench/torchgfn/.venv); prints one JSON
line: iterations per second, log Z, and writes 2000 terminal samples (and their
log-weights, log R + log P_B - log P_F) so that gfdsl's evaluator scores both alike.

    python tgfn_side.py --iters 200 --T 100 --batch 300 --sigma 2.236 --hidden 64 --out s.npz
"""

import argparse
import json
import time

import numpy as np
import torch
from gfn.estimators import PinnedBrownianMotionBackward, PinnedBrownianMotionForward
from gfn.gflownet import TBGFlowNet
from gfn.gym.diffusion_sampling import DiffusionSampling
from gfn.utils.modules import DiffusionFixedBackwardModule, DiffusionPISGradNetForward


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--batch", type=int, default=300)
    p.add_argument("--sigma", type=float, default=5 ** 0.5)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr_logz", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_eval", type=int, default=2000)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    env = DiffusionSampling("gmm25_prior", None, a.T)
    net = DiffusionPISGradNetForward(s_dim=env.dim, harmonics_dim=a.hidden, t_emb_dim=a.hidden,
                                     s_emb_dim=a.hidden, hidden_dim=a.hidden, joint_layers=2, zero_init=True)
    pf = PinnedBrownianMotionForward(env.dim, net, a.sigma, a.T)
    pb = PinnedBrownianMotionBackward(env.dim, DiffusionFixedBackwardModule(env.dim), a.sigma, a.T)
    gfn = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
    opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=a.lr)
    opt.add_param_group({"params": gfn.logz_parameters(), "lr": a.lr_logz})

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
    out = {"lib": "torchgfn", "it_per_s": a.iters / dt, "seconds": dt, "log_z": float(gfn.logZ.detach()),
           "iters": a.iters + a.warmup, "params": sum(q.numel() for q in net.parameters())}
    if a.out:
        with torch.no_grad():
            traj = gfn.sample_trajectories(env, n=a.n_eval, save_logprobs=True)
            x = traj.terminating_states.tensor[:, :-1]
            log_pf, log_pb = gfn.get_pfs_and_pbs(traj, recalculate_all_logprobs=True)
            lw = env.log_reward(traj.terminating_states) + log_pb.sum(0) - log_pf.sum(0)
        np.savez(a.out, x=x.numpy(), log_w=lw.numpy())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
