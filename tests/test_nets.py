"""Nets shaped for their data: the U-Net for image states (layouts, the step embedding,
its parameter count against the resource estimate, check-time shape errors, a DDPM
denoiser that trains) and the causal transformer for token sequences (causality, a
normalised exact likelihood under next_token(), its one-call path, shape errors)."""

from __future__ import annotations

import pytest
import torch

from gfdsl.compile.lower import lower
from gfdsl.driver import check_source
from gfdsl.errors import GfdslError
import itertools
import math

from gfdsl.library.nets import TransformerArgs, UNetArgs, _transformer_size, _unet_size
from gfdsl.runtime.nets import build


def unet(**kw):
    return build("unet", UNetArgs(**kw).model_dump(by_alias=True))


@pytest.mark.parametrize("kw", [dict(channels=1, height=8, time_embed=64),
                                dict(channels=3, height=9, width=6, base=16, mults=[1, 2, 3], out_channels=6),
                                dict(channels=2, height=8, mults=[1])])
def test_unet_shapes_and_parameter_count(kw):
    torch.manual_seed(0)
    m = unet(**kw)
    C, H, W = kw["channels"], kw["height"], kw.get("width", kw["height"])
    y = m(torch.randn(5, C * H * W), torch.arange(5).float())
    assert y.shape == (5, kw.get("out_channels", C) * H * W)
    assert sum(p.numel() for p in m.parameters()) == _unet_size(UNetArgs(**kw))[0]


def test_unet_starts_at_zero_and_reads_the_step():
    torch.manual_seed(0)
    m = unet(channels=1, height=8, time_embed=32)
    x = torch.randn(4, 64)
    assert torch.equal(m(x, torch.ones(4)), torch.zeros(4, 64))  # the output conv starts at zero
    for p in m.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    a, b = m(x, torch.full((4,), 3.0)), m(x, torch.full((4,), 40.0))
    assert not torch.allclose(a, b)
    shared = m(x, torch.tensor([40.0]).expand(4))  # a stride-0 step: embedded once
    assert torch.allclose(shared, b, atol=1e-6)


def test_unet_hwc_layout_is_the_chw_net_on_permuted_pixels():
    torch.manual_seed(0)
    chw = unet(channels=3, height=4, width=6, base=8)
    hwc = unet(channels=3, height=4, width=6, base=8, layout="hwc")
    hwc.load_state_dict(chw.state_dict())
    for p in chw.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    hwc.load_state_dict(chw.state_dict())
    img = torch.randn(2, 3, 4, 6)
    got = hwc(img.permute(0, 2, 3, 1).reshape(2, -1)).view(2, 4, 6, 3).permute(0, 3, 1, 2)
    assert torch.allclose(got, chw(img.reshape(2, -1)).view(2, 3, 4, 6), atol=1e-6)


DIGITS = """model d {{
  dims {{
    T = 4
    D = 64
  }}
  schedule beta = linear(start = 1e-3, end = 0.2, steps = T)
  state x[t in 0..T] : real[D]
  source x[T] ~ normal()
  data x[0]
  net eps = unet({args})
  step x[t] -> x[t - 1] for t in 1..T {{
    forward  = ddpm_denoiser(net = eps, schedule = beta, levels = 17)
    backward = ddpm_noising(schedule = beta)
  }}
  dataset = digits(binarize = false)
  objective = elbo(weighting = "simple")
}}
"""


def test_a_unet_denoiser_trains_on_digits():
    c = check_source(DIGITS.format(args="channels = 1, height = 8, base = 8, time_embed = 16"), path="d.gfn")
    torch.manual_seed(0)
    m = lower(c.graph, c.source)
    from gfdsl.runtime.data import load

    x, _ = load(c.graph.graph["dataset"], c.graph.nodes[c.graph.graph["data"]], "d.gfn")
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, _ = m.loss(x[:64])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0]


@pytest.mark.parametrize("args, where, code, words", [
    ("channels = 1, height = 4, time_embed = 16", "12:36", "E402", "make net 'eps' take 64 values"),
    ("channels = 1, height = 8, mults = [1, 2, 2, 2, 2], time_embed = 16", "10:13", "E305",
     "cannot be halved 4 times"),
    ("channels = 1, height = 8", "12:36", "E605", "ddpm_denoiser()"),
])
def test_unet_shape_mistakes_are_diagnostics(args, where, code, words):
    with pytest.raises(GfdslError) as e:
        check_source(DIGITS.format(args=args), path="d.gfn")
    msg = str(e.value)
    assert f"d.gfn:{where}: error[{code}]" in msg and words in msg, msg


@pytest.mark.parametrize("kw", [dict(length=8, vocab=2), dict(length=16, vocab=17, width=32, layers=3, heads=2)])
def test_transformer_is_causal_and_counted(kw):
    torch.manual_seed(0)
    m = build("transformer", TransformerArgs(**kw).model_dump(by_alias=True))
    assert sum(p.numel() for p in m.parameters()) == _transformer_size(TransformerArgs(**kw))[0]
    L, V = kw["length"], kw["vocab"]
    x = torch.randint(0, V, (3, L)).float()
    y = m(x).view(3, V, L)
    for j in (0, 4, L - 1):
        x2 = x.clone()
        x2[:, j] = (x2[:, j] + 1) % V
        d = (m(x2).view(3, V, L) - y).abs().amax((0, 1))
        assert bool((d[:j + 1] == 0).all()) and (j == L - 1 or float(d[j + 1]) > 0)


TINY_TF = """model tiny_tf {
  state x[i in 0..4] : cat(3)[i]
  source x[0]
  data x[4]
  net ar = transformer(length = 4, vocab = 3, width = 16, layers = 2, heads = 2)
  step x[i - 1] -> x[i] for i in 1..4 {
    forward  = next_token(net = ar)
    backward = truncate()
  }
  dataset = file(path = "tokens.npy")
  objective = mle
}
"""


def test_transformer_next_token_likelihood_is_exact_normalised_and_one_call():
    c = check_source(TINY_TF, path="t.gfn")
    torch.manual_seed(0)
    m = lower(c.graph, c.source)
    for p in m.parameters():
        p.data.add_(0.5 * torch.randn_like(p))
    xs = torch.tensor(list(itertools.product([0, 1, 2], repeat=4)))
    ll = m.log_likelihood(xs)
    assert m.exact and math.isclose(float(ll.exp().sum()), 1.0, rel_tol=1e-5)
    k = next(iter(m.space.kernels.values()))
    assert k.all_positions  # every position's logits from one call
    k.all_positions = False  # ... equal to the prefix-by-prefix path
    assert torch.allclose(m.log_likelihood(xs), ll, atol=1e-5)


@pytest.mark.parametrize("old, new, code, words", [
    ("vocab = 3,", "vocab = 2,", "E402", "outputs 8 values"),
    ("width = 16, layers = 2, heads = 2", "width = 16, layers = 2, heads = 3", "E305", "not a multiple of heads"),
    ("length = 4,", "length = 5,", "E402", "takes 5 values"),
])
def test_transformer_shape_mistakes_are_diagnostics(old, new, code, words):
    with pytest.raises(GfdslError) as e:
        check_source(TINY_TF.replace(old, new), path="t.gfn")
    msg = str(e.value)
    assert f"error[{code}]" in msg and words in msg and "t.gfn:" in msg, msg


def test_the_estimate_counts_one_call_for_every_position():
    """next_token over a transformer (or made) without a step input scores a whole
    trajectory in one call: the evaluation estimate counts the net once, not L times."""
    from gfdsl.compile.cost import estimate

    c = check_source(TINY_TF, path="t.gfn")
    per_call = _transformer_size(TransformerArgs(length=4, vocab=3, width=16, layers=2, heads=2))[2]
    assert estimate(c.graph, 16, eval_n=10).eval_flops == 10 * per_call


def test_embed_mlp_looks_up_one_table_per_value():
    from gfdsl.library.nets import EmbedMLPArgs, _embed_size

    torch.manual_seed(0)
    a = EmbedMLPArgs(classes=5, length=3, dim=4, out=2, hidden=[8])
    m = build("embed_mlp", a.model_dump(by_alias=True))
    assert sum(p.numel() for p in m.parameters()) == _embed_size(a)[0]
    with torch.no_grad():
        m.pos.add_(torch.randn_like(m.pos))
    ids = torch.tensor([[0, 4, 2], [3, 3, 1]])
    hot = torch.nn.functional.one_hot(ids, 5).flatten(1).float()  # how kernels pass a cat(5)[3] state
    want = m.mlp((m.table[ids] + m.pos).reshape(2, -1))
    assert torch.allclose(m(hot), want, atol=1e-6)


def test_embed_mlp_policy_trains_a_hypergrid_and_its_sizes_are_checked(tmp_path):
    from pathlib import Path

    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions

    text = (Path(__file__).parent.parent / "specs" / "hypergrid.gfn").read_text()
    old = 'net pf = mlp(in = D * H, out = D + 1, hidden = [W, W], act = "relu")'
    assert old in text
    new = 'net pf = embed_mlp(classes = H, length = D, dim = 8, out = D + 1, hidden = [W, W], act = "relu")'
    spec = tmp_path / "hg.gfn"
    spec.write_text(text.replace(old, new))
    s = train(str(spec), RunOptions(out=str(tmp_path / "run"), steps=300, progress=False))
    assert s["exact_l1"] < 0.3  # a uniform policy is at 0.74 on this grid
    with pytest.raises(GfdslError) as e:
        check_source(text.replace(old, new.replace("classes = H", "classes = H + 1")), path="hg.gfn")
    assert "error[E402]" in str(e.value) and "make net 'pf' take" in str(e.value)


@pytest.mark.parametrize("entry, args, x", [
    ("mlp", dict(in_=4, out=3, hidden=[8], time_embed=8), torch.randn(2, 4)),
    ("convnet", dict(channels=1, size=4, width=16, depth=2, time_embed=8), torch.randn(2, 16)),
    ("unet", dict(channels=1, height=8, base=8, time_embed=8), torch.randn(2, 64)),
    ("transformer", dict(length=4, vocab=3, width=16, layers=1, heads=2, time_embed=8), torch.zeros(2, 4)),
])
def test_zero_output_zeroes_the_output_layer_not_a_time_embedding(entry, args, x):
    """Kernels that start from their fixed part (learned_noising, the sampler kernels,
    flow layers) zero their net's output; with a time embedding, a conv net's or a
    transformer's last Linear is the embedding's, not the output."""
    from gfdsl.library import REGISTRY
    from gfdsl.runtime.nets import zero_output

    torch.manual_seed(0)
    spec = REGISTRY.get("net", entry).args.model_validate({("in" if k == "in_" else k): v for k, v in args.items()})
    m = build(entry, spec.model_dump(by_alias=True))
    zero_output(m)
    assert torch.equal(m(x, torch.full((2,), 3.0)), torch.zeros(2, m(x, torch.ones(2)).shape[1]))
