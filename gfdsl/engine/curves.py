"""Training curves from metrics.jsonl: every run's loss.png, and `gfdsl compare`'s figure
of several runs. One panel per series found: the training loss, the validation NLL, and
the evaluation metrics logged during training (eval_every points, IPF rounds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# evaluation figures worth a panel, in order of preference (at most MAX_EVAL are drawn)
EVAL_KEYS = ("exact_l1", "delta_log_z", "delta_log_z_rw", "log_z_error", "w2", "sliced_w2", "test_nll_nats")
MAX_EVAL = 2


def series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (steps, values): 'loss', 'val_nll_nats', and 'eval/<key>' / 'sliced_w2'."""
    out: dict[str, tuple[list[int], list[float]]] = {}

    def add(name, step, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            s, y = out.setdefault(name, ([], []))
            s.append(int(step))
            y.append(float(v))

    for rec in records:
        if "step" not in rec:
            continue
        if "loss" in rec:
            add("loss", rec["step"], rec["loss"])
        if "val_nll_nats" in rec:
            add("val_nll_nats", rec["step"], rec["val_nll_nats"])
        if "round" in rec and "sliced_w2" in rec:
            add("sliced_w2 (per IPF round)", rec["step"], rec["sliced_w2"])
        for k, v in (rec.get("eval") or {}).items():
            if k in EVAL_KEYS:
                add(f"eval/{k}", rec["step"], v)
    return out


def panels(all_series: list[dict]) -> list[str]:
    """The panels to draw for these runs: loss and val NLL, then the preferred eval keys."""
    names = set().union(*[set(s) for s in all_series]) if all_series else set()
    first = [n for n in ("loss", "val_nll_nats", "sliced_w2 (per IPF round)") if n in names]
    evals = [f"eval/{k}" for k in EVAL_KEYS if f"eval/{k}" in names][:MAX_EVAL]
    return first + evals


def plot_curves(runs: list[tuple[str, list[dict]]], path: Path, title: str) -> int:
    """Draw each run's series into one figure (a panel per series, a line per run); returns
    the number of panels drawn (0: nothing was logged, no file written)."""
    from gfdsl.engine.plots import _plt, _save

    all_series = [series(recs) for _, recs in runs]
    names = panels(all_series)
    if not names:
        return 0
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for (label, _), ser in zip(runs, all_series):
            if name in ser:
                steps, ys = ser[name]
                ax.plot(steps, ys, marker="o" if len(steps) < 30 else None, ms=3, lw=1.2, label=label)
        ys_all = np.concatenate([np.asarray(s[name][1]) for s in all_series if name in s])
        if name in ("eval/exact_l1", "eval/delta_log_z", "eval/log_z_error") and (ys_all > 0).all():
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    _save(fig, path, title)
    return len(names)
