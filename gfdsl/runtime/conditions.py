"""Conditions at run time: the values every draw of a conditional model is given, the
features its nets read, a tempered reward and a conditional log Z.

A model's `Conditions` holds what the spec declared (an int range or a real size, the
distribution a reward-driven model draws from) and the values of the current batch,
set by `given(values)`: a dict name -> tensor, (B,) long for an int condition (0-based:
value - lo; K = the number of values is the null label of classifier-free guidance),
(B, dim) float for a real one. B may be 1, which every row then shares.

Nets read the current values through `Conditioned`, which joins each condition's
features to the net's input. Inputs with more rows than the batch come from batched
calls over several steps (Chain._score, Branching.log_probs: step-major, row j * B + b)
or k trajectories per point (trajectory-major, row r * B + b): in both, row i belongs
to batch row i mod B, so the values are tiled, never interleaved.

Classifier-free guidance (Ho & Salimans 2022): with `guidance` = s the net's output is
u + s (c - u), c with the conditions and u with the int ones replaced by the null label;
s = 0 is the unconditional model, s = 1 the conditional one.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from gfdsl.runtime.targets import Target


class Conditions:
    """The declared conditions (IR form) and the current batch's values."""

    def __init__(self, specs: dict, train: dict):
        self.specs = {n: dict(c) for n, c in sorted(specs.items())}
        self.dropout = float(train.get("cond_dropout") or 0.0)
        self.eval_given = train.get("eval_given")
        self.current: dict[str, torch.Tensor] | None = None

    def __bool__(self) -> bool:
        return bool(self.specs)

    def classes(self, name: str) -> int:
        c = self.specs[name]
        return c["hi"] - c["lo"] + 1 if c["kind"] == "int" else 0

    @property
    def rows(self) -> int:
        """Rows of the current values (1: one value shared by the batch)."""
        if not self.current:
            return 1
        return max(v.shape[0] for v in self.current.values())

    @contextlib.contextmanager
    def given(self, values: dict[str, torch.Tensor] | None):
        before, self.current = self.current, values
        try:
            yield
        finally:
            self.current = before

    def value(self, name: str) -> torch.Tensor:
        if self.current is None or name not in self.current:
            raise RuntimeError(f"condition '{name}' has no value: run the model inside conditions.given(...)")
        return self.current[name]

    # -- drawing values ---------------------------------------------------------------------------

    def draw(self, n: int, device, gen: torch.Generator | None = None, labels: torch.Tensor | None = None) -> dict:
        """Values for a training batch of n: the data set's labels (0-based), or draws from
        each condition's distribution; with cond_dropout, that share of int values
        becomes the null label."""
        out = {}
        for name, c in self.specs.items():
            if c["source"] == "labels":
                v = labels.to(device)
            elif c["kind"] == "int":
                v = torch.randint(0, self.classes(name), (n,), device=device, generator=gen)
            else:
                v = _draw_real(c["prior"], n, c["dim"], device, gen)
            if c["kind"] == "int" and self.dropout > 0:
                drop = torch.rand(n, device=device, generator=gen) < self.dropout
                v = torch.where(drop, self.classes(name), v)
            out[name] = v
        return out

    def fixed(self, values: dict, n: int = 1, device=None) -> dict:
        """Tensors for spec-level values {name: int or float or list} (n rows)."""
        out = {}
        for name, c in self.specs.items():
            v = values[name]
            if c["kind"] == "int":
                out[name] = torch.full((n,), int(v) - c["lo"], dtype=torch.long, device=device)
            else:
                vv = torch.tensor(v if isinstance(v, (list, tuple)) else [v] * c["dim"], dtype=torch.float32,
                                  device=device)
                out[name] = vv[None].expand(n, -1).contiguous()
        return out

    def null(self, values: dict) -> dict:
        """The same values with every int condition at its null label (guidance's u)."""
        return {n: (torch.full_like(v, self.classes(n)) if self.specs[n]["kind"] == "int" else v)
                for n, v in values.items()}

    def grid(self) -> list[dict]:
        """The values evaluation reports on: each value of an int condition, eval_given (or
        both ends and the middle of the distribution) of a real one; their product."""
        axes = []
        for name, c in self.specs.items():
            if c["kind"] == "int":
                axes.append([(name, v) for v in range(c["lo"], c["hi"] + 1)])
            elif self.eval_given:
                axes.append([(name, float(v)) for v in self.eval_given])
            else:
                lo, hi = c["prior"]["support"]
                mid = math.sqrt(lo * hi) if c["prior"]["entry"] == "loguniform" else (lo + hi) / 2
                axes.append([(name, v) for v in (lo, mid, hi)])
        points = [{}]
        for ax in axes:
            points = [{**p, k: v} for p in points for k, v in ax]
        return points


def label(point: dict) -> str:
    """{'y': 3} -> 'y=3'; {'beta': 0.5, 'y': 1} -> 'beta=0.5,y=1'."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(point.items()))


def _draw_real(prior: dict, n: int, dim: int, device, gen) -> torch.Tensor:
    lo, hi = prior["support"]
    u = torch.rand(n, dim, device=device, generator=gen)
    if prior["entry"] == "loguniform":
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


class Features(nn.Module):
    """One condition's features (B, width): a learned embedding of an int condition (its
    values and the null label), or a learned Linear-SiLU-Linear map of a real one, read
    scaled to [-1, 1] over its distribution's support (log-scaled for loguniform), so that
    any range reaches the net at the same scale. (Fixed random Fourier features were
    tried first: on hypergrid_cond they left the exact L1 about twice as high,
    docs/results.md.)"""

    def __init__(self, spec: dict, width: int):
        super().__init__()
        self.int = spec["kind"] == "int"
        self.width = width
        if self.int:
            self.embed = nn.Embedding(spec["hi"] - spec["lo"] + 2, width)
        else:
            lo, hi = spec["prior"]["support"] if spec.get("prior") else (0.0, 1.0)
            self.log = bool(spec.get("prior")) and spec["prior"]["entry"] == "loguniform"
            lo, hi = (math.log(lo), math.log(hi)) if self.log else (lo, hi)
            self.centre, self.half = (lo + hi) / 2, max((hi - lo) / 2, 1e-12)
            self.mlp = nn.Sequential(nn.Linear(spec["dim"], width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.int:
            return self.embed(v)
        v = v.float()
        v = v.clamp(min=1e-30).log() if self.log else v
        return self.mlp((v - self.centre) / self.half)


class Conditioned(nn.Module):
    """A net that also reads conditions: inner(cat([x, features of each condition]), t).
    The inner net was built `width` columns wider than the state it reads."""

    def __init__(self, inner: nn.Module, conds: Conditions, names: list[str], width: int):
        super().__init__()
        self.inner = inner
        self.feats = nn.ModuleDict({n: Features(conds.specs[n], width) for n in names})
        self._conds = (conds,)  # not a submodule: shared by every net of the model
        self.guidance: float | None = None

    @property
    def conditions(self) -> Conditions:
        return self._conds[0]

    @property
    def horizon(self) -> int:
        return self.inner.horizon

    @horizon.setter
    def horizon(self, T: int) -> None:
        self.inner.horizon = T

    def features(self, values: dict, rows: int) -> torch.Tensor:
        parts = []
        for name, f in self.feats.items():
            e = f(values[name])  # (B, width)
            if e.shape[0] != rows:
                if rows % e.shape[0]:
                    raise RuntimeError(f"condition '{name}' has {e.shape[0]} rows for an input of {rows}")
                e = e.repeat(rows // e.shape[0], 1)  # row i is batch row i mod B (module docstring)
            parts.append(e)
        return torch.cat(parts, 1)

    def _eval(self, x: torch.Tensor, t, values: dict) -> torch.Tensor:
        return self.inner(torch.cat([x, self.features(values, x.shape[0]).to(x.dtype)], 1), t)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        conds = self.conditions
        values = {n: conds.value(n) for n in self.feats}
        if self.guidance is None or self.guidance == 1.0:
            return self._eval(x, t, values)
        u = self._eval(x, t, conds.null(values))
        if self.guidance == 0.0:
            return u
        return u + self.guidance * (self._eval(x, t, values) - u)


class LogZ(nn.Module):
    """A conditional log Z(c) for tb (B,) or (1,): a small MLP of the conditions'
    features plus a scalar offset, the offset being what log_z_init sets. (The
    temperature-conditioned GFlowNets of Zhang et al. 2023 learn log Z(beta) so.)"""

    def __init__(self, conds: Conditions, width: int = 32, hidden: int = 64):
        super().__init__()
        names = list(conds.specs)
        self.mlp = Conditioned(_ZeroInput(len(names) * width, hidden), conds, names, width)
        self.offset = nn.Parameter(torch.zeros(()))

    def forward(self) -> torch.Tensor:
        rows = self.mlp.conditions.rows
        return self.offset + self.mlp(torch.zeros(rows, 0, device=self.offset.device))[:, 0]


class _ZeroInput(nn.Module):
    """features (B, n) -> (B, 1): Linear-SiLU-Linear, the last layer zero at the start."""

    def __init__(self, n: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x: torch.Tensor, t=None) -> torch.Tensor:
        return self.net(x)


class Tempered(Target):
    """log R(x)^beta = beta log R(x) (B,), beta the current value of a real condition
    (one value for the batch, or one per row). Its modes are the target's; its exact
    log Z and exact samples are not (an enumerable space's log Z(beta) is computed from
    this log R itself)."""

    def __init__(self, target: Target, conds: Conditions, name: str):
        super().__init__()
        self.target, self._conds, self.name = target, (conds,), name
        self.differentiable = target.differentiable

    def _beta(self, rows: int) -> torch.Tensor:
        b = self._conds[0].value(self.name)[:, 0]
        return b if b.shape[0] in (1, rows) else b.repeat(rows // b.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lr = self.target(x)
        return self._beta(lr.shape[0]) * lr

    def grad_log_r(self, x: torch.Tensor) -> torch.Tensor:
        return self._beta(x.shape[0])[:, None] * self.target.grad_log_r(x)

    def centres(self):
        return self.target.centres()
