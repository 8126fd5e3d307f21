"""Two CPU processes with gloo (torchrun, DistributedDataParallel) train to the same
parameters as one process with the same global batch, and write one run directory; the
checkpoint resumes on a different number of processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from gfdsl.engine.loop import train  # noqa: F401
from gfdsl.engine.checkpoint import CKPT, read_checkpoint  # noqa: F401
from gfdsl.engine.rundir import RunOptions  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def gfdsl(*args):
    return subprocess.run([sys.executable, "-m", "gfdsl", *args], capture_output=True, text=True, timeout=300)


def test_ddp_matches_single_process(tmp_path):
    # an exact-likelihood flow: its loss is a deterministic function of the batch, so the
    # two runs must agree up to float summation order
    spec = tmp_path / "flow.gfn"
    spec.write_text((ROOT / "specs" / "realnvp.gfn").read_text().replace("K = 8 ", "K = 2 ").replace("H = 128", "H = 16"))
    runs = tmp_path / "runs"
    common = ["--steps", "25", "--batch", "32", "--no-progress", "--eval-n", "10"]
    r1 = gfdsl("run", str(spec), "--out", str(runs / "one"), *common)
    assert r1.returncode == 0, r1.stderr
    r2 = gfdsl("run", str(spec), "--out", str(runs / "two"), "--nproc", "2", *common)
    assert r2.returncode == 0, r2.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # one directory per run, not per rank
    a, _ = read_checkpoint(runs / "one" / CKPT)
    b, mb = read_checkpoint(runs / "two" / CKPT)
    assert mb["step"] == "25"
    params = [k for k in a if k.startswith("model.")]
    assert params
    for k in params:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    assert "nproc" in (runs / "two" / "summary.json").read_text()

    # a 2-process checkpoint resumes in 1 process: kill-free version, from the run.json
    import json

    info = json.loads((runs / "two" / "run.json").read_text())
    info["steps"] = 30
    (runs / "two" / "run.json").write_text(json.dumps(info))
    (runs / "two" / "summary.json").unlink()
    r3 = gfdsl("run", "--resume", str(runs / "two"), "--no-progress", "--eval-n", "10")
    assert r3.returncode == 0, r3.stderr
    assert read_checkpoint(runs / "two" / CKPT)[1]["step"] == "30"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_launcher_agents_match_a_single_process(tmp_path):
    """The multi-machine launch, with two torchrun agents on this machine (`--nnodes 2`,
    one process each, c10d rendezvous): data sharded by global rank, one run folder
    written by global rank 0, the same parameters as one process with the global batch."""
    import os

    spec = tmp_path / "flow.gfn"
    spec.write_text((ROOT / "specs" / "realnvp.gfn").read_text().replace("K = 8 ", "K = 2 ").replace("H = 128", "H = 16"))
    runs = tmp_path / "runs"
    common = ["--steps", "20", "--batch", "32", "--no-progress", "--eval-n", "10"]
    r1 = gfdsl("run", str(spec), "--out", str(runs / "one"), *common)
    assert r1.returncode == 0, r1.stderr
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
                                "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "gfdsl-test",
                                "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "gfdsl", "run", str(spec),
                                "--out", str(runs / "nodes"), *common],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
              for r in (0, 1)]
    outs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outs
    assert sorted(p.name for p in runs.iterdir()) == ["nodes", "one"]  # one folder, by global rank 0
    assert '"nproc": 2' in (runs / "nodes" / "run.json").read_text()
    a, _ = read_checkpoint(runs / "one" / CKPT)
    b, mb = read_checkpoint(runs / "nodes" / CKPT)
    assert mb["step"] == "20"
    for k in (k for k in a if k.startswith("model.")):
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
