"""Networks a spec may declare. Sizes are checked against the kernels that use them.

Spec-level description only (no torch): each net states its flat input size, output
size and time-embedding width so the checker can match them to states.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gfdsl.library.registry import REGISTRY, Args, CondRef, Entry, NonNegInt, PosInt

Activation = Literal["silu", "relu", "gelu", "tanh", "elu"]

BUILD = "gfdsl.runtime.nets:build_entry"  # the torch half of every entry here (gfdsl.plugins.construct)


class MLPArgs(Args):
    """mlp(in, out, hidden = [256, 256], act = "silu", time_embed = 0)."""

    in_: PosInt = Field(alias="in", description="flat input size (plus context inputs)")
    out: PosInt = Field(description="flat output size")
    hidden: list[PosInt] = Field(default=[256, 256], description="widths of the hidden layers")
    act: Activation = "silu"
    time_embed: NonNegInt = Field(default=0, description="width of the sinusoidal step embedding; 0 = none")
    cond: list[CondRef] = Field(default=[], max_length=16, description=(
        "conditions the net reads: each one's features (a learned embedding of an int "
        "condition, sinusoidal features of a real one) join the input"))
    cond_embed: PosInt = Field(default=32, le=4096, description="width of each condition's features")


class PisArgs(Args):
    """pis(in, out, hidden = 64, harmonics = 64, layers = 2): the PIS drift net (Zhang &
    Chen 2022; Sendera et al. 2024): Fourier features of the time t = k / T of the chain
    using it -> 2-layer GELU MLP, plus a linear embedding of the state, into a GELU MLP
    of `layers` hidden layers; the output layer starts at zero."""

    in_: PosInt = Field(alias="in", description="flat input size (plus context inputs)")
    out: PosInt = Field(description="flat output size")
    hidden: PosInt = Field(default=64, le=65_536, description="width of the embeddings and hidden layers")
    harmonics: PosInt = Field(default=64, le=65_536, description="Fourier frequencies of the time, 0.1 to 100")
    layers: PosInt = Field(default=2, le=1000, description="hidden layers of the joint MLP")
    cond: list[CondRef] = Field(default=[], max_length=16, description="conditions the net reads (as mlp)")
    cond_embed: PosInt = Field(default=32, le=4096, description="width of each condition's features")


class MADEArgs(Args):
    """made(in, hidden, out_per_dim = 1): masked autoencoder (Germain et al. 2015)."""

    in_: PosInt = Field(alias="in")
    hidden: list[PosInt] = Field(default=[256, 256], min_length=1)
    out_per_dim: PosInt = Field(default=1, description="outputs per input dimension (2 for affine, K for K classes)")
    act: Activation = "relu"
    time_embed: NonNegInt = 0


class ConvArgs(Args):
    """convnet(channels, size, width = 64, out_channels = channels, time_embed = 0)."""

    channels: PosInt
    size: PosInt = Field(description="height = width of the square image")
    width: PosInt = 64
    depth: PosInt = 3
    out_channels: PosInt | None = None
    time_embed: NonNegInt = 0

    @model_validator(mode="after")
    def _small(self):
        if self.size > 256:
            raise ValueError(f"image size {self.size} is above 256")
        return self


class EmbedMLPArgs(Args):
    """embed_mlp(classes, length, dim = 16, out, hidden = [256, 256], act = "silu",
    time_embed = 0): an mlp over learned embeddings of L categorical values of K classes."""

    classes: PosInt = Field(le=1_000_000, description="K: classes of each value read (the state's cat(K), or H of int(0, H - 1))")
    length: PosInt = Field(le=1_000_000, description="L: how many categorical values the net reads")
    dim: PosInt = Field(default=16, le=4096, description="width of each value's embedding")
    out: PosInt
    hidden: list[PosInt] = Field(default=[256, 256])
    act: Activation = "silu"
    time_embed: NonNegInt = 0


class UNetArgs(Args):
    """unet(channels, height, width = height, base = 32, mults = [1, 2], out_channels =
    channels, time_embed = 0, layout = "chw"): a small U-Net over C x H x W images."""

    channels: PosInt = Field(le=4096)
    height: PosInt = Field(le=512)
    width: PosInt | None = Field(default=None, le=512, description="image width (default: height)")
    base: PosInt = Field(default=32, le=4096, description="channels at the first resolution")
    mults: list[PosInt] = Field(default=[1, 2], min_length=1, max_length=6, description=(
        "channel multipliers, one resolution each (each halves the image)"))
    out_channels: PosInt | None = Field(default=None, le=8192)
    time_embed: NonNegInt = 0
    layout: Literal["chw", "hwc"] = Field(default="chw", description=(
        "how the flat state holds the image: channel-major, or pixel-major as an (N, H, W, C) array flattens"))

    @model_validator(mode="after")
    def _levels(self):
        w = self.width or self.height
        if min(self.height, w) < 2 ** (len(self.mults) - 1):
            raise ValueError(f"a {self.height} x {w} image cannot be halved {len(self.mults) - 1} times "
                             f"(mults has {len(self.mults)} levels)")
        return self


class TransformerArgs(Args):
    """transformer(length, vocab, width = 64, layers = 2, heads = 4, time_embed = 0): a
    causal transformer over L tokens whose position j reads tokens < j (for next_token())."""

    length: PosInt = Field(le=65_536, description="the sequence length L (its input: L token ids)")
    vocab: PosInt = Field(le=65_536, description="tokens per position: the state's classes (2 for binary)")
    width: PosInt = Field(default=64, le=8192, description="the model width")
    layers: PosInt = Field(default=2, le=128)
    heads: PosInt = Field(default=4, le=128)
    time_embed: NonNegInt = 0

    @model_validator(mode="after")
    def _heads(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads = {self.heads}")
        return self


class LUArgs(Args):
    """lu(in): a learned invertible in x in matrix in LU form and a bias, for lu_linear()."""

    in_: PosInt = Field(alias="in", le=16_384, description="the size of the state it maps")


def _mlp_facts(a: MLPArgs):
    return a.in_, a.out, a.time_embed


def _pis_facts(a: PisArgs):
    return a.in_, a.out, 2 * a.harmonics  # it reads the step (time_embed > 0)


def _made_facts(a: MADEArgs):
    return a.in_, a.in_ * a.out_per_dim, a.time_embed


def _embed_facts(a: EmbedMLPArgs):
    return a.classes * a.length, a.out, a.time_embed  # it reads the values one-hot, as kernels pass them


def _unet_facts(a: UNetArgs):
    n = a.height * (a.width or a.height)
    return a.channels * n, (a.out_channels or a.channels) * n, a.time_embed


def _transformer_facts(a: TransformerArgs):
    return a.length, a.length * a.vocab, a.time_embed


def _lu_facts(a: LUArgs):
    return a.in_, a.in_, 0


def _conv_facts(a: ConvArgs):
    n = a.size * a.size
    return a.channels * n, (a.out_channels or a.channels) * n, a.time_embed


# -- sizes, for the resource estimate (gfdsl.compile.cost): (parameters, floats, flops) with
# floats the activations one input row keeps for the backward pass (pre- and
# post-activation of each layer) and flops the multiply-adds x 2 of one row


def _dense_size(dims: list[int]) -> tuple[int, int, int]:
    params = sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    return params, 2 * sum(dims), 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def cond_width(a) -> int:
    """Input columns a net's conditions add (each condition's features are cond_embed wide)."""
    return len(getattr(a, "cond", ())) * getattr(a, "cond_embed", 0)


def _mlp_size(a: MLPArgs):
    return _dense_size([a.in_ + a.time_embed + cond_width(a), *a.hidden, a.out])


def _pis_size(a: PisArgs):
    h = a.hidden
    p, f, fl = _dense_size([a.in_ + cond_width(a), h] + [h] * a.layers + [a.out])  # state embedding, joint MLP
    tp, _, _ = _dense_size([2 * a.harmonics, h, h])  # time features: once per step, not per row
    return p + tp + a.harmonics, f, fl


def _made_size(a: MADEArgs):
    return _dense_size([a.in_ + a.time_embed, *a.hidden, a.in_ * a.out_per_dim])  # (its masks are buffers)


def _embed_size(a: EmbedMLPArgs):
    p, f, fl = _dense_size([a.length * a.dim + a.time_embed, *a.hidden, a.out])
    return p + (a.classes + a.length) * a.dim, f + a.length * a.dim, fl + 2 * a.length * a.classes * a.dim


def _unet_size(a: UNetArgs):
    """Parameters exactly (a test checks them against torch's); activations and flops
    per image from the convolutions at each resolution."""
    ch = [a.base * m for m in a.mults]
    te = 4 * a.base if a.time_embed else 0
    H, W = a.height, a.width or a.height
    pix = [-(-H // 2 ** i) * -(-W // 2 ** i) for i in range(len(ch))]
    params = macs = floats = 0

    def conv(cin, cout, k, p):  # a k x k conv at p pixels
        nonlocal params, macs, floats
        params += k * k * cin * cout + cout
        macs += k * k * cin * cout * p
        floats += 2 * cout * p

    def block(cin, cout, p):
        nonlocal params
        params += 2 * cin + 2 * cout + (te * cout + cout if te else 0)  # two GroupNorms, the embedding's Linear
        conv(cin, cout, 3, p)
        conv(cout, cout, 3, p)
        if cin != cout:
            conv(cin, cout, 1, p)

    params += a.time_embed * te + te if te else 0
    conv(a.channels, ch[0], 3, pix[0])
    for i, c in enumerate(ch):
        block(ch[max(i - 1, 0)], c, pix[i])
        if i < len(ch) - 1:
            conv(c, c, 3, pix[i + 1])
    block(ch[-1], ch[-1], pix[-1])
    for i in range(len(ch) - 1):
        conv(ch[i + 1], ch[i], 3, pix[i])
    for i, c in enumerate(ch):
        block(2 * c, c, pix[i])
    params += 2 * ch[0]
    conv(ch[0], a.out_channels or a.channels, 3, pix[0])
    return params, floats, 2 * macs


def _transformer_size(a: TransformerArgs):
    """Parameters exactly; per sequence, the activations its blocks keep and the flops
    of its matrix products (attention's L x L scores included)."""
    w, L, V = a.width, a.length, a.vocab
    block = (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w) + 4 * w  # attention, MLP, norms
    params = (V + 1) * w + L * w + a.layers * block + 2 * w + w * V + V
    params += a.time_embed * w + w if a.time_embed else 0
    floats = a.layers * L * (16 * w + 2 * a.heads * L)
    flops = 2 * a.layers * L * (12 * w * w + 2 * L * w) + 2 * L * w * V
    return params, floats, flops


def _lu_size(a: LUArgs):
    n = a.in_
    return 2 * n * n + 2 * n, 2 * n, 2 * n * n  # L and U (n x n each), log-diagonal and bias


def _conv_size(a: ConvArgs):
    c, w, n, oc = a.channels, a.width, a.size * a.size, a.out_channels or a.channels
    conv = 9 * (c * w + a.depth * w * w + w * oc)  # 3x3 kernels: in, depth blocks, out
    params = conv + (a.depth + 2) * w + a.time_embed * w * a.depth + 2 * a.depth * w
    return params, n * w * (3 * a.depth + 2), 2 * n * conv


REGISTRY.add(Entry("mlp", "net", MLPArgs, "multi-layer perceptron, optional sinusoidal time embedding",
                   info={"facts": _mlp_facts, "size": _mlp_size}, build=BUILD))
REGISTRY.add(Entry("pis", "net", PisArgs, "PIS drift net: Fourier time features and a state embedding into a GELU MLP",
                   info={"facts": _pis_facts, "size": _pis_size}, build=BUILD))
# autoregressive: output position j reads inputs < j only (runtime: the module's `autoregressive`)
REGISTRY.add(Entry("made", "net", MADEArgs, "masked autoregressive MLP (MADE); output i sees inputs < i",
                   info={"facts": _made_facts, "size": _made_size, "autoregressive": True}, build=BUILD))
REGISTRY.add(Entry("embed_mlp", "net", EmbedMLPArgs, "mlp over learned embeddings of categorical values (a table shared by the positions)",
                   info={"facts": _embed_facts, "size": _embed_size}, build=BUILD))
REGISTRY.add(Entry("unet", "net", UNetArgs, "small U-Net for C x H x W images: residual blocks per resolution, skips, time embedding",
                   info={"facts": _unet_facts, "size": _unet_size}, build=BUILD))
REGISTRY.add(Entry("transformer", "net", TransformerArgs, "causal transformer over a token sequence (position j reads tokens < j)",
                   info={"facts": _transformer_facts, "size": _transformer_size, "autoregressive": True}, build=BUILD))
REGISTRY.add(Entry("lu", "net", LUArgs, "invertible matrix P L (U + diag(s)) and bias (Glow's LU form), for lu_linear()",
                   info={"facts": _lu_facts, "size": _lu_size}, build=BUILD))
REGISTRY.add(Entry("convnet", "net", ConvArgs, "small residual conv net for square images, time-embedded",
                   info={"facts": _conv_facts, "size": _conv_size}, build=BUILD))
