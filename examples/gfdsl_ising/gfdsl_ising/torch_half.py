"""The torch halves of gfdsl-ising's entries: built by gfdsl when a model is lowered,
each called as build(args, ctx) with the spec's validated arguments (a dict)."""

import torch
from torch import nn


class Ising(nn.Module):
    """log R(s) = -E(s) = beta (J sum_<ij> s_i s_j + h sum_i s_i) (B,) for spin
    configurations given as (B, n * n) 0/1 values (a set state's membership, or a
    complete binary sequence); s_i = 2 x_i - 1."""

    def __init__(self, args: dict, ctx=None):
        super().__init__()
        n = int(args["n"])
        self.n, self.beta, self.J, self.h = n, float(args["beta"]), float(args["J"]), float(args["h"])
        self.periodic = bool(args["periodic"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (2 * x.clamp(min=0) - 1).float().reshape(-1, self.n, self.n)  # (B, n, n) spins
        if self.periodic:
            pairs = (s * s.roll(1, 1)).sum((1, 2)) + (s * s.roll(1, 2)).sum((1, 2))
        else:
            pairs = (s[:, 1:] * s[:, :-1]).sum((1, 2)) + (s[:, :, 1:] * s[:, :, :-1]).sum((1, 2))
        return self.beta * (self.J * pairs + self.h * s.sum((1, 2)))


class ResMLP(nn.Module):
    """x (B, in) -> (B, out): Linear, `blocks` x [x + Linear(act(LayerNorm(x)))], act, Linear."""

    ACT = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}

    def __init__(self, args: dict, ctx=None):
        super().__init__()
        w, act = int(args["width"]), self.ACT[args["act"]]
        self.inp = nn.Linear(int(args["in"]), w)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(w), act(), nn.Linear(w, w))
                                    for _ in range(int(args["blocks"])))
        self.act = act()
        self.out = nn.Linear(w, int(args["out"]))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(self.act(h))
