"""Bounded cost and no surprises: each input a hostile or careless user tried ends in a
result or a clear error with exit 1 -- huge models refused from the estimate before
anything is allocated, paths a spec names resolved one way, run folders made atomically,
damaged checkpoints caught by their digest, non-finite logits named before an action is
drawn from them, and the likelihood evaluated in memory independent of T."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gfdsl.compile.lower as lower_mod
from gfdsl.cli.app import main
from gfdsl.compile.cost import estimate, parse_memory
from gfdsl.driver import check_file, check_source
from gfdsl.engine.checkpoint import CKPT, PREV

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def spec_with(tmp_path: Path, name: str, *edits: tuple[str, str], file: str = "m.gfn") -> Path:
    text = (SPECS / name).read_text()
    for a, b in edits:
        assert a in text, a
        text = text.replace(a, b)
    p = tmp_path / file
    p.write_text(text)
    return p


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.fixture
def no_build(monkeypatch):
    """Refusals happen before the model is built: lowering it fails the test."""
    def boom(*a, **k):
        raise AssertionError("the model was built (allocated) before the refusal")
    monkeypatch.setattr(lower_mod, "lower", boom)


# -- sizes refused from the estimate ---------------------------------------------------------------

HUGE = [
    ("ddpm.gfn", ("hidden = [H, H, H]", "hidden = [10000000]")),
    ("ddpm.gfn", ("time_embed = 128", "time_embed = 100000000")),
    ("ddpm.gfn", ("time_embed = 128", "time_embed = 1000000")),
    ("hvae.gfn", ("Z1 = 32 ", "Z1 = 16777216 ")),
    ("realnvp.gfn", ("K = 12 ", "K = 1000 "), ("H = 128", "H = 4096")),
    ("hypergrid.gfn", ("D = 2    # dimensions", "D = 99999"), ("H = 8 ", "H = 2 ")),
    ("bitseq.gfn", ("L = 12 ", "L = 100000 ")),
]


@pytest.mark.parametrize("case", HUGE, ids=lambda c: c[0] + ":" + c[1][1])
def test_a_model_that_cannot_fit_is_refused_before_allocation(tmp_path, capsys, no_build, case):
    name, *edits = case
    p = spec_with(tmp_path, name, *edits)
    rc, err = run_cli(capsys, "run", p, "--steps", 2, "--out", tmp_path / "run", "--no-progress", "--max-memory", "20G")
    assert rc == 1, err
    assert "error[E807]" in err and "of memory, above the limit of 20.0 GiB (--max-memory)" in err
    assert err.startswith(f"{p}:")  # path:line:col of the declaration that drives the estimate
    assert not (tmp_path / "run").exists()
    assert "internal error" not in err


def test_an_evaluation_of_hours_is_refused_with_its_estimate(tmp_path, capsys, no_build):
    p = spec_with(tmp_path, "ddpm.gfn", ("eval_k = 20 ", "eval_k = 100000 "))
    rc, err = run_cli(capsys, "run", p, "--steps", 2, "--out", tmp_path / "run", "--no-progress")
    assert rc == 1 and "error[E807]" in err and "the evaluation needs about" in err and "100000 trajectories" in err
    assert not (tmp_path / "run").exists()


def test_check_cost_prints_the_estimate(capsys):
    rc, out = run_cli(capsys, "check", "--cost", SPECS / "ddpm.gfn")
    assert rc == 0
    for what in ("parameters and gradients", "optimizer state (adam)", "activations of a step", "total",
                 "parameters: 165,634", "evaluation: 2000 test points x 20 trajectories x 100 steps"):
        assert what in out


def test_the_parameter_count_is_the_built_models():
    """The estimate's parameter count against torch's own, for every net type shipped."""
    for name in ("ddpm.gfn", "hvae.gfn", "realnvp.gfn", "maf.gfn", "hypergrid.gfn", "sampler_gmm.gfn"):
        c = check_file(SPECS / name, {})
        model = lower_mod.lower(c.graph, c.source)
        own = sum(p.numel() for n, p in model.nets.named_parameters())
        assert estimate(c.graph, 16).parameters == own, name


def test_memory_sizes_parse():
    assert parse_memory("8G") == 8 << 30 and parse_memory("512M") == 512 << 20 and parse_memory("1.5GiB") == 3 << 29
    for bad in ("", "G", "-1G", "nanG", "lots"):
        with pytest.raises((ValueError, IndexError)):
            parse_memory(bad)


def test_huge_spaces_are_counted_without_printing_every_digit(tmp_path, capsys):
    p = spec_with(tmp_path, "hypergrid.gfn", ("D = 2    # dimensions", "D = 99999"), ("H = 8 ", "H = 2 "))
    rc, out = run_cli(capsys, "check", p)
    assert rc == 0 and "about 10^30102 states" in out or "about 10^30103 states" in out
    p = spec_with(tmp_path, "bitseq.gfn", ("L = 12 ", "L = 100000 "), file="b.gfn")
    rc, out = run_cli(capsys, "check", p)
    assert rc == 0 and "states grown by" in out


# -- the likelihood in bounded memory ----------------------------------------------------------------

CONTEXT = """
model ctx {
  state y : cat(8)[1]
  state z : real[2]
  state x : real[2]
  source y ~ uniform()
  data x
  net dec = mlp(in = 8, out = 4, hidden = [16])
  net dec2 = mlp(in = 10, out = 4, hidden = [16])
  net enc = mlp(in = 2, out = 8, hidden = [16])
  net enc2 = mlp(in = 2, out = 4, hidden = [16])
  step y -> z { forward = gaussian(net = dec)  backward = categorical(net = enc) }
  step z -> x given y { forward = gaussian(net = dec2)  backward = gaussian(net = enc2) }
  dataset = toy2d(name = "8gaussians")
  objective = elbo(train = "both")
}
"""


@pytest.mark.parametrize("which", ["ddpm", "hvae", "context"])
def test_streamed_log_weights_equal_the_stored_trajectorys(which):
    """Chain.log_weight_stream draws what backward() draws and sums the same terms, keeping
    only the states later steps read (here a categorical context state fed one-hot)."""
    if which == "context":
        c = check_source(CONTEXT)
        x = torch.randn(7, 2)
    else:
        c = check_file(SPECS / f"{which}.gfn", {"T": 6} if which == "ddpm" else {})
        x = torch.randn(7, 2) if which == "ddpm" else (torch.rand(7, 64) > 0.5).float()
    m = lower_mod.lower(c.graph, c.source)
    torch.manual_seed(0)
    full = m.space.backward(x, 3).log_weight()
    torch.manual_seed(0)
    stream = m.space.log_weight_stream(x, 3)
    assert stream.shape == (21,)
    assert torch.allclose(full, stream, rtol=1e-5, atol=1e-4)


def test_a_points_trajectories_sliced_past_the_chunk_give_the_same_bound():
    c = check_file(SPECS / "ddpm.gfn", {"T": 4})
    m = lower_mod.lower(c.graph, c.source)
    x = torch.randn(5, 2)
    torch.manual_seed(1)
    whole = m.log_likelihood(x, k=8, chunk=4096)
    seen = []
    torch.manual_seed(1)
    sliced = m.log_likelihood(x, k=8, chunk=4, progress=lambda d, t: seen.append((d, t)))
    # different slicing draws the noise in another order: same estimator, close values
    assert sliced.shape == whole.shape and torch.isfinite(sliced).all()
    assert (sliced - whole).abs().max() < 1.0 and seen[-1] == (5, 5)


# -- files a spec names ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd.npy", "../secret/r.npy", "a/../../r.npy"])
def test_a_reward_table_outside_the_spec_folder_is_refused_at_its_argument(tmp_path, capsys, path):
    p = spec_with(tmp_path, "hypergrid.gfn", ("reward = hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0)",
                                              f'reward = table(file = "{path}")'))
    rc, err = run_cli(capsys, "check", p)
    assert rc == 1 and "error[E303]" in err and f"{p}:26:25" in err


@pytest.mark.parametrize("kind", ["fifo", "string", "complex", "zeros", "folder"])
def test_a_bad_reward_table_is_a_clear_error_and_leaves_no_run_folder(tmp_path, capsys, kind):
    f = tmp_path / "r.npy"
    if kind == "fifo":
        os.mkfifo(f)  # reading it would block for ever: refused before it is opened
    elif kind == "folder":
        f.mkdir()
    else:
        np.save(f, {"string": np.array([["a"] * 8] * 8), "complex": np.ones((8, 8)) * (1 + 1j),
                    "zeros": np.zeros((8, 8))}[kind])
    p = spec_with(tmp_path, "hypergrid.gfn", ("reward = hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0)",
                                              'reward = table(file = "r.npy")'))
    rc, err = run_cli(capsys, "run", p, "--steps", 2, "--out", tmp_path / "run", "--no-progress")
    assert rc == 1 and "error[E801]" in err, err
    assert {"fifo": "FIFO", "string": "not numeric", "complex": "complex", "zeros": "every reward is 0",
            "folder": "directory"}[kind] in err
    assert not (tmp_path / "run").exists()


def test_a_spec_that_is_not_a_regular_file_is_refused_before_it_is_opened(tmp_path):
    fifo = tmp_path / "spec.gfn"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        r = subprocess.run([sys.executable, "-m", "gfdsl", "check", path], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "error[E701]" in r.stderr and "not a regular file" in r.stderr


def test_a_file_data_run_is_evaluated_and_resumed_from_another_folder(tmp_path):
    """Acceptance: the data file is found through the run's record, not the current folder."""
    home = tmp_path / "project"
    home.mkdir()
    np.save(home / "x.npy", np.random.default_rng(0).standard_normal((200, 2)).astype(np.float32))
    spec_with(home, "ddpm.gfn", ('dataset = toy2d(name = "8gaussians")', 'dataset = file(path = "x.npy")'),
              ("T = 100 ", "T = 5 "), ("H = 256", "H = 16"), ("steps  = 20000", "steps = 6"),
              ("batch  = 512", "batch = 32"), ("seed   = 0", "seed = 0\n    checkpoint_every = 3"))
    r = subprocess.run([sys.executable, "-m", "gfdsl", "run", "m.gfn", "--out", "runs/m", "--no-progress",
                        "--eval-n", "20"], capture_output=True, text=True, cwd=home)
    assert r.returncode == 0, r.stderr
    run = home / "runs" / "m"
    info = json.loads((run / "run.json").read_text())
    assert info["spec_dir"] == str(home.resolve()) and info["inputs"]["x.npy"]["copied"]
    assert (run / "inputs" / "x.npy").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "gfdsl", "eval", str(run), "--n", "20"], capture_output=True, text=True,
                       cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "test_nll_nats" in json.loads(r.stdout)
    info["steps"] = 9  # continue past the end
    (run / "run.json").write_text(json.dumps(info))
    r = subprocess.run([sys.executable, "-m", "gfdsl", "run", "--resume", str(run), "--no-progress", "--eval-n", "20"],
                       capture_output=True, text=True, cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 6


# -- numerics and flags ------------------------------------------------------------------------------


def test_flags_obey_the_bounds_of_the_settings_they_override(tmp_path, capsys, no_build):
    for flag, value in (("--lr", "1e300"), ("--steps", "1000000000"), ("--eval-k", "1000000")):
        rc, err = run_cli(capsys, "run", SPECS / "hypergrid.gfn", flag, value, "--out", tmp_path / "run")
        assert rc == 1 and "error[E709]" in err and f"bad value for {flag}" in err


def test_a_reward_zero_everywhere_is_a_checker_error(tmp_path, capsys):
    p = spec_with(tmp_path, "hypergrid.gfn", ("r0 = 0.1, r1 = 0.5, r2 = 2.0", "r0 = 0, r1 = 0, r2 = 0"))
    rc, err = run_cli(capsys, "check", p)
    assert rc == 1 and "error[E305]" in err and "R = 0 on every state" in err and ":26:12" in err


@pytest.mark.parametrize("D", [2, 4])
def test_non_finite_logits_stop_the_run_naming_the_step_before_an_action_is_drawn(tmp_path, D):
    """The policy's weights turned NaN after the first checkpoint: the next rollout sees
    non-finite logits (2-D: the table rollout, 4-D: the compact one) and the run stops
    with E804 at that step, the checkpoint kept."""
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions
    from gfdsl.errors import GfdslError

    p = spec_with(tmp_path, "hypergrid.gfn", ("checkpoint_every = 500", "checkpoint_every = 2"))

    def poison(step, model):
        with torch.no_grad():
            for q in model.nets["pf"].parameters():
                q.fill_(float("nan"))

    with pytest.raises(GfdslError) as e:
        train(str(p), RunOptions(steps=6, out=str(tmp_path / "run"), progress=False, on_checkpoint=poison), {"D": D})
    text = e.value.render()
    assert "error[E804]" in text and "the run stopped at step 3" in text and "logits are not finite" in text
    assert "last good checkpoint (step 2)" in text and (tmp_path / "run" / CKPT).is_file()


def test_a_categorical_state_reaches_a_net_one_hot(tmp_path, capsys):
    bad = CONTEXT.replace("net dec = mlp(in = 8", "net dec = mlp(in = 1")
    p = tmp_path / "c.gfn"
    p.write_text(bad)
    rc, err = run_cli(capsys, "check", p)
    assert rc == 1 and "error[E402]" in err and "cat(8)[1], one-hot" in err and "set `in = 8`" in err
    p.write_text(CONTEXT)
    rc, out = run_cli(capsys, "run", p, "--steps", 2, "--out", tmp_path / "run", "--no-progress", "--eval-n", 20)
    assert rc == 0, out


# -- checkpoints and run folders ---------------------------------------------------------------------


def _small_run(tmp_path: Path, steps: int = 4) -> Path:
    p = spec_with(tmp_path, "hypergrid.gfn", ("checkpoint_every = 500", "checkpoint_every = 2"),
                  ("steps            = 1000", f"steps = {steps}"))
    rc = main(["run", str(p), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    return tmp_path / "run"


def test_a_damaged_checkpoint_is_caught_and_resume_falls_back_to_the_previous(tmp_path, capsys):
    run = _small_run(tmp_path)
    capsys.readouterr()
    assert (run / PREV).is_file()
    b = bytearray((run / CKPT).read_bytes())
    n = struct.unpack("<Q", b[:8])[0]
    for i in range(41):  # 41 bytes flipped inside the tensor data
        b[8 + n + 100 + i] ^= 0xFF
    (run / CKPT).write_bytes(bytes(b))
    for cmd in (["sample", run], ["eval", run]):
        rc, err = run_cli(capsys, *cmd)
        assert rc == 1 and "error[E803]" in err and "damaged" in err and CKPT in err
    info = json.loads((run / "run.json").read_text())
    info["steps"] = 6
    (run / "run.json").write_text(json.dumps(info))
    rc, err = run_cli(capsys, "run", "--resume", run, "--no-progress")
    assert rc == 0 and "resuming from checkpoint.prev.safetensors (step 2)" in err
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 2


def test_out_that_is_a_file_is_refused(tmp_path, capsys, no_build):
    f = tmp_path / "afile"
    f.write_text("keep me")
    rc, err = run_cli(capsys, "run", SPECS / "hypergrid.gfn", "--out", f, "--steps", 2)
    assert rc == 1 and "error[E803]" in err and "it is a file" in err and f.read_text() == "keep me"


def test_a_full_disk_at_the_start_leaves_nothing_and_a_failed_start_is_replaced(tmp_path, capsys, monkeypatch):
    import gfdsl.engine.rundir as rundir

    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir.os, "fsync", full)
    rc, err = run_cli(capsys, "run", SPECS / "hypergrid.gfn", "--out", tmp_path / "run", "--steps", 2, "--no-progress")
    assert rc == 1 and "error[E803]" in err and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin
    monkeypatch.setattr(rundir.os, "fsync", real)
    # a folder an older, failed start left (run.json, spec.gfn, empty metrics) is replaced
    (tmp_path / "run").mkdir()
    for name in ("run.json", "spec.gfn", "metrics.jsonl"):
        (tmp_path / "run" / name).write_text("" if name == "metrics.jsonl" else "{}")
    rc, out = run_cli(capsys, "run", SPECS / "hypergrid.gfn", "--out", tmp_path / "run", "--steps", 2, "--no-progress")
    assert rc == 0 and (tmp_path / "run" / "summary.json").is_file()
    # but a folder holding real work is not
    rc, err = run_cli(capsys, "run", SPECS / "hypergrid.gfn", "--out", tmp_path / "run", "--steps", 2, "--no-progress")
    assert rc == 1 and "already holds files" in err


def test_a_full_disk_at_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    from gfdsl.engine import checkpoint
    from gfdsl.engine.loop import train
    from gfdsl.engine.rundir import RunOptions
    from gfdsl.errors import GfdslError

    p = spec_with(tmp_path, "hypergrid.gfn", ("checkpoint_every = 500", "checkpoint_every = 2"))
    calls = []
    real = checkpoint.os.fsync

    def fill_after_first(fd):  # the disk fills up after the first checkpoint
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f".{CKPT}.tmp"):
            calls.append(fd)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fill_after_first)
    with pytest.raises(GfdslError) as e:
        train(str(p), RunOptions(steps=6, out=str(tmp_path / "run"), progress=False))
    assert "error[E704]" in e.value.render() and "No space left on device" in e.value.render()
    from gfdsl.engine.checkpoint import read_checkpoint
    _, meta = read_checkpoint(tmp_path / "run" / CKPT)
    assert meta["step"] == "2" and not (tmp_path / "run" / f".{CKPT}.tmp").exists()


# -- fuzzing past the front end: a small sample (bench/fuzz.py --deep runs many) -----------------------


def test_mutants_that_check_run_sample_and_evaluate_without_internal_errors(tmp_path, capsys):
    import random

    from gfdsl.testing import mutate, outcome

    rng = random.Random(7)
    texts = [p.read_text() for p in sorted(SPECS.glob("*.gfn"))]
    picked = []
    while len(picked) < 3:
        text = mutate(rng.choice(texts), rng, rng.randint(1, 3))
        if outcome(text)[0] == "ok":
            picked.append(text)
    for i, text in enumerate(picked):
        spec, run = tmp_path / f"m{i}.gfn", tmp_path / f"run{i}"
        spec.write_text(text)
        extra = ["--prior-steps", 2] if " then rtb" in text else []
        rc, out = run_cli(capsys, "run", spec, "--steps", 2, "--eval-n", 10, "--no-progress", "--out", run,
                          "--max-memory", "8G", *extra)
        assert rc in (0, 1) and "internal error" not in out, out
        if rc == 0:
            for cmd in (["sample", run, "-n", 5], ["eval", run, "--n", 10]):
                rc, out = run_cli(capsys, *cmd)
                assert rc in (0, 1) and "internal error" not in out, out
