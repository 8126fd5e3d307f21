"""The reward objectives side by side: tb, db, subtb, fm and vargrad (and tb with
exploration and replay) on the shipped reward-driven specs, at equal steps and batch,
scored exactly.

Each variant is the shipped spec with its objective (and, where needed, a state-flow net
or a uniform P_B) swapped by text substitution, so every row is a spec a user could
write. Prints a markdown table: objective, steps/s, exact L1, |log Z - true log Z|.

    python bench/reward_objectives.py [--steps 1000] [--batch 64] [--seeds 1]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOW = {"hypergrid": 'net fl = mlp(in = D * H, out = 1, hidden = [W, W], act = "relu")',
        "bitseq": 'net fl = mlp(in = L * (V + 1), out = 1, hidden = [W, W], act = "relu")'}
VARIANTS = [
    ("tb", "tb", None, ""),
    ("db", "db(flow = fl)", None, ""),
    ("subtb (lamda 0.9)", "subtb(flow = fl, lamda = 0.9)", None, ""),
    ("fm (uniform P_B)", "fm", "uniform()", ""),
    ("vargrad", "vargrad", None, ""),
    ("tb, epsilon 0.1", "tb", None, "epsilon = 0.1"),
    ("tb, replay 4096", "tb", None, "replay = 4096"),
]


def variant_text(spec: str, objective: str, backward: str | None, train: str) -> str:
    text = (ROOT / "specs" / f"{spec}.gfn").read_text()
    text = re.sub(r"objective = \w+", f"objective = {objective}", text)
    text = re.sub(r"\n\s*epsilon\s*=[^\n]*", "", text)  # each variant states its own exploration
    text = text.replace("  policy forward", f"  {FLOW[spec]}\n  policy forward", 1)
    if backward:
        text = re.sub(r"policy backward = [^\n]*", f"policy backward = {backward}", text)
        text = re.sub(r"\n\s*net pb = [^\n]*", "", text)
    if train:
        text = text.replace("  train {", f"  train {{\n    {train}", 1)
    return text


def run(text: str, overrides: dict, steps: int, batch: int, seed: int) -> dict:
    from gfdsl.driver import check_source
    from gfdsl.compile.lower import lower
    from gfdsl.engine.module import param_groups
    from gfdsl.engine.loop import make_optimizer

    c = check_source(text, overrides)
    torch.manual_seed(seed)
    m = lower(c.graph, c.source)
    opt = make_optimizer(torch.optim.Adam, param_groups(m, 1e-3, 0.1), 1e-3, 0.0)
    empty = torch.zeros(batch, 0)
    t0 = time.perf_counter()
    for k in range(steps):
        loss, _ = m.loss(empty, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    ev = m.exact_distribution()
    return {"it_s": steps / dt, "l1": ev["exact_l1"], "log_z_err": ev["log_z_error"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the markdown here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    lines = []
    for spec, ov in (("hypergrid", {"D": 4}), ("bitseq", {})):
        what = "hypergrid 4-D 8^4" if spec == "hypergrid" else "bitseq L = 12 (prepend/append)"
        lines += [f"### {what}: {a.steps} steps of batch {a.batch}, {a.seeds} seed(s)", "",
                  "| objective | steps/s | exact L1 | abs(log Z - true) |", "|---|---|---|---|"]
        for name, obj, bwd, train in VARIANTS:
            rs = [run(variant_text(spec, obj, bwd, train), ov, a.steps, a.batch, s) for s in range(a.seeds)]
            l1 = np.array([r["l1"] for r in rs])
            lz = [r["log_z_err"] for r in rs if r["log_z_err"] is not None]
            lines.append(f"| {name} | {np.mean([r['it_s'] for r in rs]):.0f} | {l1.mean():.4f}"
                         + (f" +- {l1.std():.4f}" if a.seeds > 1 else "") + " | "
                         + (f"{np.mean(lz):.4f}" if lz else "n/a (no log Z)") + " |")
            print(lines[-1], flush=True)
        lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
