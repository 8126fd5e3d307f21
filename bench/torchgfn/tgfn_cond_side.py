"""The torchgfn side of bench/torchgfn/conditional.py: a temperature-conditioned
hypergrid, R(x)^beta with beta ~ U[0.5, 2] per trajectory, trained by TB with the
conditional estimators of torchgfn 2.4.1 as its train_conditional example builds them (a
256-wide state trunk to 16 features, a condition MLP to 16, a final MLP on both; P_B
sharing the trunks; log Z(beta) an MLP of the condition).

Runs in torchgfn's own virtual environment; prints one JSON line (iterations/second) and
writes the trained P_F logits over every state at each evaluated beta, (len(betas), N,
n_actions) in gfdsl's enumeration order, plus log Z(beta), for gfdsl's exact evaluator.
"""

import argparse
import json
import time

import numpy as np
import torch
from gfn.estimators import ConditionalDiscretePolicyEstimator, ScalarEstimator
from gfn.gflownet import TBGFlowNet
from gfn.gym.hypergrid import ConditionalHyperGrid
from gfn.preprocessors import KHotPreprocessor
from gfn.utils.modules import MLP

LO, HI = 0.5, 2.0


class TemperedHyperGrid(ConditionalHyperGrid):
    """R(x)^beta, the condition beta drawn uniformly from [LO, HI]."""

    def sample_conditions(self, batch_shape):
        shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        return LO + (HI - LO) * torch.rand(shape + (1,), device=self.device)

    def reward(self, states):
        return self._original_reward_fn(states.tensor) ** states.conditions.squeeze(-1)


class LogZ(ScalarEstimator):
    """log Z(beta): an MLP of the condition alone (the example's wrapper)."""

    def __init__(self, module, pre):
        super().__init__(module=module, preprocessor=pre)

    def forward(self, conditions):
        return self.module(conditions)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--height", type=int, default=8)
    p.add_argument("--ndim", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--betas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    env = TemperedHyperGrid(ndim=a.ndim, height=a.height, reward_fn_kwargs={"R0": 0.1, "R1": 0.5, "R2": 2.0},
                            validate_modes=False)
    pre = KHotPreprocessor(height=a.height, ndim=a.ndim)
    trunk_f = MLP(input_dim=pre.output_dim, output_dim=16, hidden_dim=256)
    trunk_b = MLP(input_dim=pre.output_dim, output_dim=16, hidden_dim=256, trunk=trunk_f.trunk)
    cond = MLP(input_dim=1, output_dim=16, hidden_dim=16)
    final_f = MLP(input_dim=32, output_dim=env.n_actions)
    final_b = MLP(input_dim=32, output_dim=env.n_actions - 1, trunk=final_f.trunk)
    pf = ConditionalDiscretePolicyEstimator(trunk_f, cond, final_f, env.n_actions, preprocessor=pre, is_backward=False)
    pb = ConditionalDiscretePolicyEstimator(trunk_b, cond, final_b, env.n_actions, preprocessor=pre, is_backward=True)
    gfn = TBGFlowNet(logZ=LogZ(MLP(input_dim=1, output_dim=1, hidden_dim=64, n_hidden_layers=2), pre), pf=pf, pb=pb)
    opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=1e-3)
    opt.add_param_group({"params": gfn.logz_parameters(), "lr": 0.1})

    def step() -> None:
        c = env.sample_conditions(a.batch)
        traj = gfn.sample_trajectories(env, n=a.batch, conditions=c, save_logprobs=True)
        loss = gfn.loss(env, traj, recalculate_all_logprobs=False)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    dt = time.perf_counter() - t0
    k = torch.arange(a.height ** a.ndim)[:, None]
    S = (k // a.height ** torch.arange(a.ndim)[None, :]) % a.height  # gfdsl's state order
    enc = torch.nn.functional.one_hot(S, a.height).flatten(1).float()
    logits, log_z = [], []
    with torch.no_grad():
        for b in a.betas:
            c = torch.full((enc.shape[0], 1), b)
            logits.append(final_f(torch.cat((trunk_f(enc), cond(c)), -1)).numpy())
            log_z.append(float(gfn.logZ(c[:1]).squeeze()))
    np.save(a.out, np.stack(logits).astype(np.float64))
    print(json.dumps({"lib": "torchgfn", "it_per_s": a.iters / dt, "seconds": dt, "log_z": log_z}))


if __name__ == "__main__":
    main()
