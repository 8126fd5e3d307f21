"""Networks: MLP with a sinusoidal step embedding, MADE, a small conv net.

Every net maps a flat input `x` of shape (B, in) and an optional step input `t` of shape
(B,) (float; the step's index, e.g. 1..T for DDPM) to (B, out).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACT = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU}
FUNCTIONAL = {"silu": nn.functional.silu, "relu": nn.functional.relu, "gelu": nn.functional.gelu,
              "tanh": torch.tanh, "elu": nn.functional.elu}


class SinusoidalEmbedding(nn.Module):
    """t (B,) -> (B, dim): [sin(t w_k), cos(t w_k)], w_k geometric in [1, 1/10000]
    (Vaswani et al. 2017; Ho et al. 2020). The frequencies are a buffer."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t.float()[:, None] * self.freqs[None, :]  # (B, half)
        e = torch.cat([a.sin(), a.cos()], dim=1)
        if self.dim % 2:
            e = torch.nn.functional.pad(e, (0, 1))
        return e


class MLP(nn.Module):
    """Linear-activation stack; the step embedding is concatenated to the input."""

    def __init__(self, in_: int, out: int, hidden: list[int], act: str = "silu", time_embed: int = 0):
        super().__init__()
        self.embed = SinusoidalEmbedding(time_embed) if time_embed else None
        dims = [in_ + time_embed, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), ACT[act]()]
        layers.append(nn.Linear(dims[-1], out))
        self.body = nn.Sequential(*layers)
        self.act = FUNCTIONAL[act]

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if t is None:
                t = torch.zeros(x.shape[0], device=x.device)
            x = torch.cat([x, self.embed(t)], dim=1)
        # The layers are applied as functions, not through nn.Module calls: a rollout
        # calls a small net once per step, where module dispatch costs as much as the
        # arithmetic (bench/torchgfn). Parameters and state-dict keys are body.N.*.
        body = self.body
        n = len(body)
        for i in range(0, n, 2):
            lin = body[i]
            x = nn.functional.linear(x, lin.weight, lin.bias)
            if i + 1 < n:
                x = self.act(x)
        # under bf16 autocast the layers run in bf16; kernels get float32 so that
        # log-probabilities are computed and accumulated in float32
        return x.float()


class MaskedLinear(nn.Linear):
    def __init__(self, a: int, b: int, mask: torch.Tensor):
        super().__init__(a, b)
        self.register_buffer("mask", mask.float(), persistent=False)  # (b, a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder (Germain et al. 2015): output block d depends on inputs < d only.

    Output layout: (B, in * out_per_dim), grouped as [param j of dim d] at j * in + d, so
    `out.view(B, out_per_dim, in)` gives one (B, in) tensor per parameter.
    """

    def __init__(self, in_: int, hidden: list[int], out_per_dim: int = 1, act: str = "relu", time_embed: int = 0):
        super().__init__()
        D = in_
        self.D, self.k = D, out_per_dim
        self.embed = SinusoidalEmbedding(time_embed) if time_embed else None
        degrees = [torch.arange(1, D + 1)]  # input degrees 1..D
        for h in hidden:
            # hidden degrees cycle over 1..D-1 so every unit is used (deterministic order)
            degrees.append(torch.arange(h) % max(D - 1, 1) + 1)
        layers: list[nn.Module] = []
        for i, h in enumerate(hidden):
            mask = degrees[i + 1][:, None] >= degrees[i][None, :]
            lin = MaskedLinear(degrees[i].numel() + (time_embed if i == 0 else 0), h,
                               torch.cat([mask, torch.ones(h, time_embed if i == 0 else 0, dtype=torch.bool)], 1))
            layers += [lin, ACT[act]()]
        out_deg = torch.arange(1, D + 1).repeat(out_per_dim)
        last = degrees[-1]
        mask = out_deg[:, None] > last[None, :]
        extra = time_embed if not hidden else 0
        layers.append(MaskedLinear(last.numel() + extra, D * out_per_dim,
                                   torch.cat([mask, torch.ones(D * out_per_dim, extra, dtype=torch.bool)], 1)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if t is None:
                t = torch.zeros(x.shape[0], device=x.device)
            x = torch.cat([x, self.embed(t)], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x.float()


class ConvNet(nn.Module):
    """A small residual conv net for C x S x S images with a step embedding added to each
    block's features (a miniature of Ho et al.'s U-Net, without down-sampling)."""

    def __init__(self, channels: int, size: int, width: int = 64, depth: int = 3,
                 out_channels: int | None = None, time_embed: int = 0):
        super().__init__()
        self.c, self.s = channels, size
        self.embed = SinusoidalEmbedding(time_embed) if time_embed else None
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(8 if width % 8 == 0 else 1, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(depth))
        self.temb = nn.ModuleList(nn.Linear(time_embed, width) for _ in range(depth)) if time_embed else None
        self.out = nn.Conv2d(width, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B = x.shape[0]
        h = self.inp(x.view(B, self.c, self.s, self.s))
        e = self.embed(t if t is not None else torch.zeros(B, device=x.device)) if self.embed is not None else None
        for i, blk in enumerate(self.blocks):
            r = h if e is None else h + self.temb[i](e)[:, :, None, None]
            h = h + blk(r)
        return self.out(h).reshape(B, -1).float()


def build(entry: str, args: dict) -> nn.Module:
    """Registry entry name + validated arguments (IR form) -> module."""
    a = dict(args)
    if entry == "mlp":
        return MLP(a["in"], a["out"], a["hidden"], a["act"], a["time_embed"])
    if entry == "made":
        return MADE(a["in"], a["hidden"], a["out_per_dim"], a["act"], a["time_embed"])
    if entry == "convnet":
        return ConvNet(a["channels"], a["size"], a["width"], a["depth"], a["out_channels"], a["time_embed"])
    raise KeyError(entry)
