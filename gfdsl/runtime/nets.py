"""Networks: MLP with a sinusoidal step embedding, the PIS drift net, MADE, a small conv net.

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


def shared_step(t: torch.Tensor) -> bool:
    """Whether a step input (B,) is one value for the whole batch: a chain passes its
    step position as a stride-0 view (Chain._pos), so nets compute that step's
    embedding once for the batch instead of once per row."""
    return t.dim() == 1 and t.shape[0] > 1 and t.stride(0) == 0


def zero_output(net: nn.Module) -> None:
    """Zero a net's output layer, so that a kernel built on it starts as its fixed part:
    the identity map of a flow layer, the noising process, Brownian motion. The layer is
    the net's `output_layer` where it names one (a conv net's last conv, a transformer's
    head: their last Linear is a time embedding's), else its last Linear."""
    last = getattr(net, "output_layer", None) or [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def full(x: torch.Tensor) -> torch.Tensor:
    """A net's output in full precision: under bf16 autocast the layers run in bf16, and
    kernels get float32 so that log-probabilities are computed and accumulated in float32;
    a float64 model (the numerical tests) stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


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
        # the Linear layers, for forward(): a rollout calls a small net once per step,
        # where nn.Module attribute lookups (body[i], .weight) cost as much as a matmul
        # of a few rows; parameters are read from each layer's _parameters at every call
        # (so .to(), load_state_dict and DDP, which may replace them, stay correct)
        self._lins = tuple(layers[0::2])

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        first = None
        if self.embed is not None:
            if t is None:
                t = torch.zeros(x.shape[0], device=x.device)
            if shared_step(t):
                first = self._shared_step(x, t[:1])
            else:
                x = torch.cat([x, self.embed(t)], dim=1)
        # The layers are applied as functions, not through nn.Module calls: a rollout
        # calls a small net once per step, where module dispatch costs as much as the
        # arithmetic (bench/torchgfn). Parameters and state-dict keys are body.N.*.
        lins, act, relu = self._lins, self.act, self.act is nn.functional.relu
        last = len(lins) - 1
        for i, lin in enumerate(lins):
            p = lin._parameters
            x = first if i == 0 and first is not None else nn.functional.linear(x, p["weight"], p["bias"])
            if i < last:  # relu in place on the layer's own output (autograd keeps the result)
                x = x.relu_() if relu else act(x)
        return full(x)

    def _shared_step(self, x: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """The first layer's pre-activation (B, h_1) when every row is at the same step
        t1 (1,) -- a chain's rollout passes its step as a stride-0 view: W_x x + (W_t
        e(t1) + b), the embedding's term computed once for the batch instead of once per
        row (with a 64-wide embedding of a 2-D state that is 97% of the layer's work)."""
        p = self._lins[0]._parameters
        w, n = p["weight"], x.shape[1]
        return nn.functional.linear(x, w[:, :n]) + nn.functional.linear(self.embed(t1), w[:, n:], p["bias"])

    @property
    def replayable(self) -> bool:
        """Whether forward_keep/replay apply: no step embedding (its input is not kept)."""
        return self.embed is None

    def gather_table(self, n_hot: int) -> torch.Tensor:
        """The first layer as a table (in, h_1) for inputs that are one-hot in n_hot blocks:
        row c is W_1[:, c] + b_1 / n_hot, so the sum of the rows of a state's n_hot hot
        columns (one embedding_bag) is its first pre-activation, for forward_keep(first=):
        the same function up to float rounding, without building x and multiplying it.
        Built from the current parameters: once per rollout, not once per step."""
        p = self._lins[0]._parameters
        return (p["weight"].t() + p["bias"] / n_hot).contiguous()

    def forward_keep(self, x: torch.Tensor | None = None,
                     first: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """forward(x) without a graph, and what the backward pass needs of each hidden
        layer (B, h_l): its output for relu (its derivative is where the output is > 0),
        else its pre-activation. replay() turns an output computed this way into one with
        the parameters' graph, without computing it again. first: the first layer's
        pre-activation (B, h_1), if the caller computed it (gather_table)."""
        lins, keep, relu = self._lins, [], self.act is nn.functional.relu
        last = len(lins) - 1
        for i, lin in enumerate(lins):
            p = lin._parameters
            if i == 0 and first is not None:
                x = first
            else:
                x = nn.functional.linear(x, p["weight"], p["bias"])
            if i < last:
                if relu:
                    x = x.relu_()
                    keep.append(x)
                else:
                    keep.append(x)
                    x = self.act(x)
        return full(x), keep  # as forward()

    def replay(self, out: torch.Tensor, x: torch.Tensor, keep: list[torch.Tensor]) -> torch.Tensor:
        """out (B, out) = forward_keep(x), now differentiable in the parameters: the same
        values, and the gradients of having evaluated forward(x) on these rows."""
        params = [t for lin in self._lins for t in (lin._parameters["weight"], lin._parameters["bias"])]
        return _Replay.apply(self, out, len(keep) + 1, x, *keep, *params)


class EmbedMLP(nn.Module):
    """An MLP over learned embeddings of L categorical values: the input (B, L * K) is the
    one-hot encoding kernels and policies pass for a cat(K)[L] or int state; each value's
    K columns pick a row of one (K, dim) table shared by the positions, a learned (L, dim)
    position vector is added, and the (B, L * dim) result goes through an mlp. Against
    one-hot into the first layer (L * K * H weights) it factors that layer through the
    table (K * dim + L * dim + L * dim * H), which pays off when K is large."""

    def __init__(self, classes: int, length: int, dim: int, out: int, hidden: list[int], act: str = "silu",
                 time_embed: int = 0):
        super().__init__()
        self.K, self.L = classes, length
        self.table = nn.Parameter(torch.randn(classes, dim) / math.sqrt(dim))
        self.pos = nn.Parameter(torch.zeros(length, dim))
        self.mlp = MLP(length * dim, out, hidden, act, time_embed)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B = x.shape[0]
        h = x.view(B, self.L, self.K).to(self.table.dtype) @ self.table + self.pos  # (B, L, dim): a lookup for one-hot rows
        return self.mlp(h.reshape(B, -1), t)


class _Replay(torch.autograd.Function):
    """An MLP's output whose forward pass was already computed (MLP.forward_keep), with
    the backward pass of its layers written out: for layer l with input a (B, in) and
    output gradient g (B, out), dW = g^T a, db = sum_B g, and g W is the gradient of
    the input, through the activation's derivative (relu: where its output is > 0, the
    kernel autograd uses; other activations by autograd on the kept pre-activation)."""

    @staticmethod
    def forward(ctx, mlp, out, n_keep, *rest):
        keep, params = rest[:n_keep], rest[n_keep:]
        ctx.mlp, ctx.n_keep = mlp, n_keep
        ctx.save_for_backward(*keep, *params)
        return out.clone()  # a new tensor, so that callers may mask it in place

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        saved = ctx.saved_tensors
        keep, params = saved[:ctx.n_keep], saved[ctx.n_keep:]  # keep: x, then per hidden layer
        act, relu = ctx.mlp.act, ctx.mlp.act is nn.functional.relu
        grads = [None] * len(params)
        need = ctx.needs_input_grad[3 + ctx.n_keep:]
        g = g.to(params[0].dtype)
        for l in range(len(params) // 2 - 1, -1, -1):  # the last layer first
            h = keep[l]  # layer l's input is x (l = 0), else act(h) or h itself (relu)
            a = h if relu or not l else act(h)
            grads[2 * l] = g.t().mm(a) if need[2 * l] else None
            grads[2 * l + 1] = g.sum(0) if need[2 * l + 1] else None
            if l:
                g = g.mm(params[2 * l])
                if relu:  # in place: g is this pass's own product
                    g = torch.ops.aten.threshold_backward.grad_input(g, h, 0.0, grad_input=g)
                else:
                    with torch.enable_grad():
                        hh = h.detach().requires_grad_()
                        (g,) = torch.autograd.grad(act(hh), hh, g)
        return (None, None, None, *([None] * ctx.n_keep), *grads)


class PISNet(nn.Module):
    """The PIS drift net (Zhang & Chen 2022, appendix; Sendera et al. 2024): with t = k / T
    (`horizon` = T, set by the kernel that uses it; the step input is k + 1),
      e_t = W_2 gelu(W_1 [sin(t w + phi), cos(t w + phi)])    w: `harmonics` frequencies in
                                                               [0.1, 100], phi learned
      out = L(gelu(... gelu(L_1 gelu(W_s x + e_t))))           the last layer zero at start
    e_t depends on the step alone: a batch at one step (a stride-0 step input) computes it
    once (B, hidden) -> (1, hidden)."""

    def __init__(self, in_: int, out: int, hidden: int = 64, harmonics: int = 64, layers: int = 2):
        super().__init__()
        self.horizon = 1
        self.register_buffer("freqs", torch.linspace(0.1, 100.0, harmonics)[None], persistent=False)
        self.phase = nn.Parameter(torch.randn(1, harmonics))
        self.t_model = nn.Sequential(nn.Linear(2 * harmonics, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.s_model = nn.Linear(in_, hidden)
        dims = [hidden] * (layers + 1)
        self._lins = tuple(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])) + (nn.Linear(hidden, out),)
        self.joint = nn.ModuleList(self._lins)
        nn.init.zeros_(self._lins[-1].weight)
        nn.init.zeros_(self._lins[-1].bias)

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        """Step input k + 1 (B,) -> e_t (B, hidden). More rows than steps (a batched call
        over many steps' states): the features of every step 1..T once (T, hidden),
        gathered by row -- the step inputs a chain passes are the integers 1..T."""
        T = self.horizon
        if T > 1 and t.shape[0] > T:
            table = self._features(torch.arange(1, T + 1, device=t.device, dtype=torch.float32))
            return table.index_select(0, (t.long() - 1).clamp_(0, T - 1))
        return self._features(t.float())

    def _features(self, t: torch.Tensor) -> torch.Tensor:
        a = ((t[:, None] - 1) / self.horizon) * self.freqs + self.phase
        return self.t_model(torch.cat([a.sin(), a.cos()], 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if t is None:
            t = torch.ones(x.shape[0], device=x.device)
        h = self.s_model(x) + self.time_features(t[:1] if shared_step(t) else t)
        gelu = nn.functional.gelu
        for lin in self._lins:
            p = lin._parameters
            h = nn.functional.linear(gelu(h), p["weight"], p["bias"])
        return h


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

    autoregressive = True

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
        return full(x)


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

    @property
    def output_layer(self) -> nn.Module:
        return self.out

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B = x.shape[0]
        h = self.inp(x.view(B, self.c, self.s, self.s))
        e = self.embed(t if t is not None else torch.zeros(B, device=x.device)) if self.embed is not None else None
        for i, blk in enumerate(self.blocks):
            r = h if e is None else h + self.temb[i](e)[:, :, None, None]
            h = h + blk(r)
        return full(self.out(h).reshape(B, -1))


def _groups(ch: int) -> int:
    return 8 if ch % 8 == 0 else 1


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, the step's embedding added per channel, GroupNorm, SiLU,
    3x3 conv, plus the input (through a 1x1 conv where the channels change)."""

    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout) if temb else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        if e is not None:
            h = h + self.t(e)[:, :, None, None]
        return self.skip(x) + self.c2(nn.functional.silu(self.n2(h)))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015) in the shape of Ho et al.'s DDPM denoiser
    (2020, app. B): C x H x W images, one residual block per resolution on the way down
    (H, H/2, ... for len(mults) levels, base * mult channels, stride-2 convs between),
    one in the middle, one per resolution on the way up with the skip concatenated
    (nearest up-sampling and a conv between); the step's sinusoidal embedding goes
    through Linear + SiLU to every block; the output conv starts at zero. States are
    flat (B, C * H * W), channel-major ("chw") or pixel-major ("hwc", as an (N, H, W, C)
    array flattens)."""

    def __init__(self, channels: int, height: int, width: int, base: int = 32, mults=(1, 2),
                 out_channels: int | None = None, time_embed: int = 0, layout: str = "chw"):
        super().__init__()
        self.c, self.h, self.w, self.oc, self.layout = channels, height, width, out_channels or channels, layout
        ch = [base * m for m in mults]
        te = 4 * base if time_embed else 0
        self.embed = SinusoidalEmbedding(time_embed) if time_embed else None
        self.temb = nn.Sequential(nn.Linear(time_embed, te), nn.SiLU()) if time_embed else None
        self.inp = nn.Conv2d(channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList(ResBlock(ch[max(i - 1, 0)], c, te) for i, c in enumerate(ch))
        self.pool = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in ch[:-1])
        self.mid = ResBlock(ch[-1], ch[-1], te)
        self.lift = nn.ModuleList(nn.Conv2d(ch[i + 1], ch[i], 3, padding=1) for i in range(len(ch) - 1))
        self.up = nn.ModuleList(ResBlock(2 * c, c, te) for c in ch)
        self.norm = nn.GroupNorm(_groups(ch[0]), ch[0])
        self.out = nn.Conv2d(ch[0], self.oc, 3, padding=1)
        zero_output(self)

    @property
    def output_layer(self) -> nn.Module:
        return self.out

    def _embedding(self, t: torch.Tensor | None, B: int, device) -> torch.Tensor | None:
        if self.embed is None:
            return None
        if t is None:
            t = torch.zeros(B, device=device)
        if shared_step(t):  # one step for the batch: embed it once
            return self.temb(self.embed(t[:1])).expand(B, -1)
        return self.temb(self.embed(t))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B = x.shape[0]
        img = (x.view(B, self.h, self.w, self.c).permute(0, 3, 1, 2) if self.layout == "hwc"
               else x.view(B, self.c, self.h, self.w))
        e = self._embedding(t, B, x.device)
        h, skips = self.inp(img), []
        for i, blk in enumerate(self.down):
            h = blk(h, e)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.mid(h, e)
        for i in range(len(self.up) - 1, -1, -1):
            if i < len(self.lift):  # back to resolution i (its skip's size: odd sizes round up on the way down)
                h = self.lift[i](nn.functional.interpolate(h, size=skips[i].shape[-2:], mode="nearest"))
            h = self.up[i](torch.cat([h, skips[i]], 1), e)
        y = self.out(nn.functional.silu(self.norm(h)))
        y = y.permute(0, 2, 3, 1) if self.layout == "hwc" else y
        return full(y.reshape(B, -1))


class Transformer(nn.Module):
    """A causal (decoder-only) transformer over a token sequence of length L (Vaswani et al.
    2017; GPT's pre-norm blocks, Radford et al. 2019): the input (B, L) holds token ids
    (a prefix padded with anything), position j's output reads tokens < j only (the
    sequence is shifted right behind a learned start token under a causal mask), and the
    output (B, vocab * L) is laid out as MADE's, `out.view(B, vocab, L)`, so next_token()
    reads every position's logits from one call."""

    autoregressive = True  # position j's outputs see inputs < j only

    def __init__(self, length: int, vocab: int, width: int = 64, layers: int = 2, heads: int = 4,
                 time_embed: int = 0):
        super().__init__()
        self.L, self.V = length, vocab
        self.tok = nn.Embedding(vocab + 1, width)  # id `vocab` is the start token
        self.pos = nn.Parameter(0.02 * torch.randn(length, width))
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.embed = SinusoidalEmbedding(time_embed) if time_embed else None
        self.temb = nn.Linear(time_embed, width) if time_embed else None
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    @property
    def output_layer(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B = x.shape[0]
        ids = x.long().clamp(0, self.V - 1)
        ids = torch.cat([torch.full((B, 1), self.V, dtype=torch.long, device=x.device), ids[:, :-1]], 1)
        h = self.tok(ids) + self.pos  # (B, L, width)
        if self.embed is not None:
            h = h + self.temb(self.embed(t if t is not None else torch.zeros(B, device=x.device)))[:, None]
        h = self.norm(self.blocks(h, mask=self.mask, is_causal=True))
        return full(self.head(h).transpose(1, 2).reshape(B, -1))  # (B, vocab * L)


class LU(nn.Module):
    """The parameters of an invertible map y = W x + b, W = P L (U + diag(s)): P a fixed
    permutation, L unit lower- and U strictly upper-triangular, s = sign * exp(log_s)
    (Kingma & Dhariwal 2018, sec. 3.2). W starts as a random rotation, b at zero;
    lu_linear() (runtime/flows.py) maps states with it and reads log|det W| = sum(log_s)."""

    def __init__(self, dim: int):
        super().__init__()
        P, L, U = torch.linalg.lu(torch.linalg.qr(torch.randn(dim, dim))[0])
        s = torch.diagonal(U)
        self.register_buffer("P", P)
        self.register_buffer("sign", s.sign())
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1), persistent=False)
        self.L = nn.Parameter(L * self.lower_mask)
        self.U = nn.Parameter(torch.triu(U, 1))
        self.log_s = nn.Parameter(s.abs().log())
        self.b = nn.Parameter(torch.zeros(dim))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, U + diag(s)), each (D, D)."""
        eye = torch.eye(self.log_s.shape[0], device=self.log_s.device, dtype=self.log_s.dtype)
        return self.L * self.lower_mask + eye, self.U * self.lower_mask.T + torch.diag(self.sign * self.log_s.exp())

    def weight(self) -> torch.Tensor:
        L, U = self.factors()
        return self.P @ L @ U

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return x @ self.weight().T + self.b


def build(entry: str, args: dict) -> nn.Module:
    """Registry entry name + validated arguments (IR form) -> module."""
    a = dict(args)
    if entry == "mlp":
        return MLP(a["in"], a["out"], a["hidden"], a["act"], a["time_embed"])
    if entry == "pis":
        return PISNet(a["in"], a["out"], a["hidden"], a["harmonics"], a["layers"])
    if entry == "made":
        return MADE(a["in"], a["hidden"], a["out_per_dim"], a["act"], a["time_embed"])
    if entry == "embed_mlp":
        return EmbedMLP(a["classes"], a["length"], a["dim"], a["out"], a["hidden"], a["act"], a["time_embed"])
    if entry == "unet":
        return UNet(a["channels"], a["height"], a["width"] or a["height"], a["base"], tuple(a["mults"]),
                    a["out_channels"], a["time_embed"], a["layout"])
    if entry == "transformer":
        return Transformer(a["length"], a["vocab"], a["width"], a["layers"], a["heads"], a["time_embed"])
    if entry == "lu":
        return LU(a["in"])
    if entry == "convnet":
        return ConvNet(a["channels"], a["size"], a["width"], a["depth"], a["out_channels"], a["time_embed"])
    raise KeyError(entry)


def build_entry(args: dict, ctx) -> nn.Module:
    """The registry's `build` for gfdsl.library.nets (ctx: a gfdsl.plugins.Context)."""
    return build(ctx.entry, args)
