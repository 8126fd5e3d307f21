"""The resource estimate of a checked model, before anything is allocated.

From the IR alone (no torch): parameters, optimizer state, the activations one training
step keeps for its backward pass at the batch size, the states of a batch of
trajectories, replay buffers and the evaluation's chunks, in bytes; and the evaluation's
work in floating-point operations. `gfdsl check --cost` prints it; `gfdsl run` refuses a
model whose estimate exceeds the memory it may use (E807, the machine's available memory
unless --max-memory says otherwise) before the run folder is made, and an evaluation whose
work would take hours (E807 too).

The figures are estimates, not bounds: activations are counted per net row (each
layer's input and output, float32), which is what autograd keeps for an MLP; allocator
slack and PyTorch's own buffers come on top. Counts are exact Python integers, so no
size overflows here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import networkx as nx

from gfdsl.ir.graph import numel
from gfdsl.library.kernels import RK_STAGES
from gfdsl.library.registry import REGISTRY, Ref

F32 = 4
EVAL_CHUNK = 4096  # trajectories scored at once by the streamed likelihood (gfdsl.engine.module)
EVAL_FLOPS_LIMIT = 2e14  # about 2 hours at the 30 GFLOP/s a 2-core CPU sustains on 256-wide MLPs
CPU_FLOPS = 3e10  # what the time estimates assume, operations per second


@dataclass
class Cost:
    parameters: int = 0
    rows: list[tuple[str, int]] = field(default_factory=list)  # (what, bytes)
    eval_flops: float = 0.0
    eval_what: str = ""
    # what -> the source span (line, col, end line, end col) of the declaration that drives
    # that row: the largest net for the parameters, the widest state for the rest
    where: dict[str, tuple] = field(default_factory=dict)

    def add(self, what: str, nbytes: int, span: tuple | None = None) -> None:
        self.rows.append((what, nbytes))
        if span is not None:
            self.where[what] = span

    def culprit(self) -> tuple | None:
        """The span of the largest row's declaration (for E807's position), if known."""
        if not self.rows:
            return None
        return self.where.get(max(self.rows, key=lambda r: r[1])[0])

    @property
    def total(self) -> int:
        return sum(b for _, b in self.rows)

    def table(self) -> str:
        w = max(len(k) for k, _ in self.rows) if self.rows else 10
        lines = [f"  {k:<{w}}  {human(b):>10}" for k, b in self.rows]
        lines.append(f"  {'total':<{w}}  {human(self.total):>10}")
        lines.append(f"  parameters: {self.parameters:,}")
        if self.eval_flops:
            lines.append(f"  evaluation: {self.eval_what}: {self.eval_flops:.2g} floating-point operations "
                         f"(about {duration(self.eval_flops / CPU_FLOPS)} at {CPU_FLOPS / 1e9:.0f} GFLOP/s)")
        return "\n".join(lines)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"


def parse_memory(text: str) -> int:
    """'8G', '512M', '1.5GiB', '1000000' -> bytes; ValueError otherwise."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    v = float(t[:-1] if t[-1:] in "KMGT" and t[-1:] else t)
    if not v > 0 or v != v or v == float("inf"):
        raise ValueError(text)
    return int(v * mult)


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo (what a new process may take without swapping), or
    the physical memory where that file is missing; None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# -- the estimate ---------------------------------------------------------------------------------


def _net_sizes(G: dict) -> dict[str, tuple[int, int, int]]:
    """net name -> (parameters, activation floats per row, flops per row)."""
    out = {}
    for name, n in G["nets"].items():
        e = REGISTRY.get("net", n["entry"])
        args = dict(n["args"])
        if "cond" in args:  # the IR holds the names; the schema takes references
            args["cond"] = [Ref("condition", c) for c in args["cond"]]
        out[name] = e.info["size"](e.args.model_validate(args))
    return out


def _net_calls(k: dict, n: int) -> int:
    """Net passes one step of kernel k makes per row, counting a backward pass as two:
    an ode_flow step runs its net once per Runge-Kutta stage, plus the divergence's
    backward passes (n of them exact, one for Hutchinson's); every other kernel once."""
    if k.get("entry") != "ode_flow":
        return 1
    stages = RK_STAGES[k["args"]["solver"]]
    return stages * (1 + 2 * (n if k["args"]["trace"] == "exact" else 1))


def _one_call(k: dict, net: dict) -> bool:
    """A next_token kernel over an autoregressive net without a step input: the chain
    scores every position of a trajectory from one call (runtime NextToken.all_positions)."""
    return (k.get("entry") == "next_token" and REGISTRY.get("net", net["entry"]).info.get("autoregressive", False)
            and not net["args"].get("time_embed"))


def _per_step(g: nx.DiGraph, sizes: dict) -> tuple[list[tuple[int, int]], int]:
    """For a chain, each step's (activation floats, flops) per trajectory -- the nets of
    its forward and backward kernels -- and the widest state."""
    G = g.graph
    steps, once = [], set()
    for _a, _b, d in g.edges(data=True):
        if d["kind"] != "step":
            continue
        act = flops = 0
        for kid in (d["forward"], d["backward"]):
            k = G["kernels"].get(kid) or {}
            net = k.get("args", {}).get("net")
            if net in once:
                continue
            if net in sizes:
                if _one_call(k, G["nets"][net]):  # next_token reads every position from one call
                    once.add(net)
                calls = _net_calls(k, numel(g.nodes[_b]))
                act += sizes[net][1] * calls
                flops += sizes[net][2] * calls
        steps.append((act, flops))
    width = max((numel(v) for _, v in g.nodes(data=True) if "shape" in v), default=0)
    return steps, width


def estimate(g: nx.DiGraph, batch: int, eval_n: int | None = None, eval_k: int | None = None) -> Cost:
    """The memory a run of the checked model g needs at this batch size, and the work of
    its evaluation (eval_n test points, eval_k trajectories each)."""
    G = g.graph
    s = G["train"]
    sizes = _net_sizes(G)
    c = Cost(parameters=sum(p for p, _, _ in sizes.values()))
    P = c.parameters
    opt = {"adam": 2, "adamw": 2, "sgd": 0}[s["optimizer"]]
    # spans for E807: the largest net drives the parameters, the widest state the rest
    big = G["nets"][max(sizes, key=lambda n: sizes[n][0])].get("span") if sizes else None
    wide = max((v for _, v in g.nodes(data=True) if "shape" in v), key=numel, default={}).get("span")
    replay_at = G.get("train_spans", {}).get("replay")  # the buffer's row points at its `replay = N`
    c.add("parameters and gradients", 2 * F32 * P, big)
    c.add(f"optimizer state ({s['optimizer']})", opt * F32 * P, big)
    terms = {t["term"]: t["args"] for t in G["objective"] + G["prior_objective"]}
    if "rtb" in terms:
        c.add("frozen prior (a copy of the nets)", F32 * P)
    k = max([a.get("k", 1) for n, a in terms.items() if n == "tbc"], default=1)
    if G["space"] is not None:
        sp = G["space"]
        length = sp["max_moves"] + 1  # positions of the longest trajectory
        act = sum(a for _, a, _ in sizes.values())
        c.add("trajectory states", batch * (length + 1) * sp["size"] * 8, wide)
        c.add("activations of a step", batch * length * act * F32, wide)
        if s["replay"]:
            c.add("replay buffer", s["replay"] * (sp["size"] * 8 + 8), replay_at or wide)
        return c
    steps, width = _per_step(g, sizes)
    T = max(len(steps), 1)
    # one-step terms (L_simple, the hybrid loss, flow matching) call the net once per row
    # on one drawn step, instead of scoring whole trajectories
    simple = all(n == "cfm" or (n == "elbo" and a.get("weighting") in ("simple", "hybrid")) for n, a in terms.items())
    rows = batch * k
    act = max(a for a, _ in steps) if simple and steps else sum(a for a, _ in steps)
    c.add("trajectory states", rows * (T + 1) * width * F32 * (1 if simple else 2), wide)
    c.add("activations of a step", rows * act * F32, wide)
    if s["replay"]:
        c.add("replay buffer", s["replay"] * (width * F32 + 8), replay_at or wide)
    # evaluation: the likelihood streams over steps in chunks of EVAL_CHUNK trajectories;
    # a reward-driven chain scores 2000 forward trajectories at once
    per_step = max((a for a, _ in steps), default=0)
    if G["reward"] is not None or G["source_data"] is not None:
        c.add("evaluation (2000 trajectories)", 2000 * ((T + 1) * width * F32 + per_step * F32), wide)
        c.eval_flops = 2000.0 * sum(f for _, f in steps)
        c.eval_what = "2000 trajectories"
    elif G["dataset"] is not None and eval_n:
        ek = 1 if _exact(G) else (eval_k or s["eval_k"])
        c.add("evaluation chunk", min(EVAL_CHUNK, eval_n * ek) * (3 * width + per_step) * F32, wide)
        c.eval_flops = float(eval_n) * ek * sum(f for _, f in steps)
        c.eval_what = f"{eval_n} test points x {ek} trajectories x {T} steps"
    return c


def _exact(G: dict) -> bool:
    """Each x has one trajectory: no backward kernel samples (the likelihood needs k = 1)."""
    for k in G["kernels"].values():
        if k["role"] == "backward" and "deterministic" not in k.get("caps", ()) and k["entry"] not in ("inverse",):
            return False
    return True
