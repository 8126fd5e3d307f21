"""Device throughput and DDP scaling, measured side by side in one run.

1. DDPM (specs/ddpm.gfn) at batch 4096 on the device present (CUDA if any, else CPU):
   training steps/s and examples/s, fp32 and bf16 autocast; sampling (all 100 P_F steps)
   samples/s.
2. The reward-driven hypergrid (specs/hypergrid.gfn, TB) at batch 1024, 2-D 8x8 and
   4-D 8^4: training steps/s and trajectories/s, and sampling trajectories/s.
3. DDP: `gfdsl run --nproc 2` (gloo on CPU, NCCL on CUDA) vs one process, same spec and
   global batch, steps/s of each and the ratio.

    python bench/throughput.py [--steps 30] [--ddp-steps 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(step, warm: int, steps: int, dev) -> float:
    """steps/s of `step` after `warm` untimed calls, synchronising a GPU at both ends."""
    for _ in range(warm):
        step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps / (time.perf_counter() - t)


def ddpm_throughput(steps: int, batch: int, amp: bool, dev: torch.device) -> tuple[float, float]:
    import numpy as np

    from gfdsl.driver import check_file
    from gfdsl.compile.lower import lower
    from gfdsl.runtime.data import toy2d

    torch.manual_seed(0)
    c = check_file(ROOT / "specs" / "ddpm.gfn")
    m = lower(c.graph, c.source).to(dev)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    data = torch.tensor(toy2d("8gaussians", 50_000, np.random.default_rng(0)), dtype=torch.float32, device=dev)

    def step():
        x = data[torch.randint(0, data.shape[0], (batch,), device=dev)]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = m.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train = timed(step, 3, steps, dev)
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        m.sample(256)
        sync(dev)
        t = time.perf_counter()
        m.sample(batch)
        sync(dev)
        samp = batch / (time.perf_counter() - t)
    return train, samp


def hypergrid_throughput(steps: int, batch: int, ndim: int, dev: torch.device) -> tuple[float, float]:
    from gfdsl.driver import check_file
    from gfdsl.compile.lower import lower
    from gfdsl.engine.module import param_groups
    from gfdsl.engine.loop import make_optimizer

    torch.manual_seed(0)
    c = check_file(ROOT / "specs" / "hypergrid.gfn", {"D": ndim})
    m = lower(c.graph, c.source).to(dev)
    opt = make_optimizer(torch.optim.Adam, param_groups(m, 1e-3, 0.1), 1e-3, 0.0)
    empty = torch.zeros(batch, 0, device=dev)

    def step():
        loss, _ = m.loss(empty)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train = timed(step, 20, steps, dev)  # 20 warm-up steps: an untrained policy stops early
    m.sample(batch)
    sync(dev)
    t = time.perf_counter()
    m.sample(batch)
    sync(dev)
    return train, batch / (time.perf_counter() - t)


def ddp_compare(steps: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for n in (1, 2):
            run = Path(d) / f"n{n}"
            cmd = [sys.executable, "-m", "gfdsl", "run", str(ROOT / "specs" / "ddpm.gfn"), "--steps", str(steps),
                   "--out", str(run), "--no-progress", "--eval-n", "10", "--eval-k", "1", "--nproc", str(n)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:])
                raise SystemExit(1)
            out[n] = json.loads((run / "summary.json").read_text())["steps_per_second"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--ddp-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({a.threads} thread)"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"DDPM (T = 100, 165,634 parameters), batch {a.batch}:")
    for amp in (False, True):
        tr, sp = ddpm_throughput(a.steps, a.batch, amp, dev)
        tag = "bf16 autocast" if amp else "fp32"
        print(f"  {tag:14s} train {tr:7.2f} steps/s = {tr * a.batch:9.0f} examples/s; "
              f"sample {sp:9.0f} samples/s (100 steps each)")
    print("hypergrid (TB, P_F and P_B 2 x 256 MLPs), batch 1024:")
    for ndim in (2, 4):
        tr, sp = hypergrid_throughput(a.steps, 1024, ndim, dev)
        print(f"  {ndim}-D 8^{ndim}         train {tr:7.2f} steps/s = {tr * 1024:9.0f} trajectories/s; "
              f"sample {sp:9.0f} trajectories/s")
    r = ddp_compare(a.ddp_steps)
    print(f"DDP, specs/ddpm.gfn, global batch 512, {a.ddp_steps} steps (gloo on CPU / NCCL on CUDA):")
    print(f"  1 process   {r[1]:7.1f} steps/s")
    print(f"  2 processes {r[2]:7.1f} steps/s   ratio {r[2] / r[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
