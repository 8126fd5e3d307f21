"""The figures of diffusion-sampler runs for docs/results.md: each run's `eval_every`
curve (Delta log Z, Delta log Z^RW, EUBO - log Z, W2^2 per evaluation step), its last
checkpoint evaluated on 2000 fresh samples, and its plots (samples over the energy or
pairwise marginals, and the log Z-hat curve) -- also for a run stopped before its
budget (Ctrl-C keeps the last checkpoint).

    python bench/sampler_report.py runs/gmm25 runs/funnel --img docs/img --md out.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def report(run: Path, img: Path | None) -> list[str]:
    from gfdsl.engine import plots
    from gfdsl.engine.evaluate import draw_samples, reward_metrics
    from gfdsl.engine.rundir import eval_points, load_model

    torch.set_num_threads(1)
    _, model, step, _ = load_model(run)
    model.eval()
    ev = reward_metrics(model, seed=0)
    pts = eval_points(run / "metrics.jsonl")
    name = model.spec["name"]
    lines = [f"**{name}** (`{run}`), evaluation points along the run (2000 samples each):", "",
             "| step | Delta log Z | Delta log Z^RW | EUBO - log Z | W2^2 |", "|---|---|---|---|---|"]
    for p in pts + [{"step": f"checkpoint of step {step}", "eval": ev}]:
        e = p["eval"]
        lines.append(f"| {p['step']} | {e['delta_log_z']:.3f} | {e['delta_log_z_rw']:.3f} | "
                     f"{e['eubo'] - e['log_z_true']:.3f} | {e['w2_squared']:.3f} |")
    if img is not None:
        torch.manual_seed(2)
        x = draw_samples(model, 2000)
        title = f"{name}: Delta log Z {ev['delta_log_z']:.3f}, W2^2 {ev['w2_squared']:.2f}"
        plots.plot_energy(model, x, img / f"{name}_samples.png", title)
        if pts:
            plots.plot_log_z(pts, ev["log_z_true"], img / f"{name}_logz.png", f"{name}: log Z estimates")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--img", default=None, help="write <model>_samples.png and <model>_logz.png here")
    p.add_argument("--md", default=None)
    a = p.parse_args()
    out = []
    for r in a.runs:
        out += report(Path(r), Path(a.img) if a.img else None)
    text = "\n".join(out)
    print(text)
    if a.md:
        Path(a.md).write_text(text + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
