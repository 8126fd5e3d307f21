"""The Python API (docs/api.md): a spec as an object one can compile, train in one's own
loop, or hand to gfdsl's trainer.

    spec = gfdsl.load("specs/ddpm.gfn", T=10)   # check it (no torch yet)
    model = spec.compile()                      # the GfnModel: an nn.Module
    train, test = spec.data()                   # the data target's tensors
    loss, parts = model.loss(train[:256])       # the spec's objective on a batch
    gfdsl.train(spec, steps=500, out="runs/x")  # or gfdsl's own loop: a run directory

Importing this module does not import torch; compile(), data() and train() do.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from gfdsl import plugins
from gfdsl.driver import Compiled, check_file, check_source


class Spec:
    """A checked spec: its source, AST, CheckedSpec and IR graph (`.graph`, a networkx DiGraph)."""

    def __init__(self, compiled: Compiled, overrides: dict[str, int]):
        self.compiled, self.overrides = compiled, dict(overrides)

    @property
    def graph(self):
        return self.compiled.graph

    @property
    def name(self) -> str:
        return self.compiled.graph.graph["name"]

    @property
    def path(self) -> str:
        return self.compiled.source.path

    @property
    def settings(self) -> dict:
        """The train block with its defaults filled in (steps, batch, lr, ...)."""
        return dict(self.compiled.graph.graph["train"])

    def compile(self, device: str = "cpu"):
        """The model as a gfdsl.engine.module.GfnModel (an nn.Module) on `device`: its nets,
        sample(n) / infer(x, k) rollouts, log_probs(t), log_reward(x), log_likelihood(x, k)
        and loss(batch, step), the spec's objective."""
        from gfdsl.compile.lower import lower
        from gfdsl.engine.rundir import resolve_device

        return lower(self.compiled.graph, self.compiled.source).to(resolve_device(device))

    def data(self):
        """(train, test) tensors of the data target, shaped (N, n) for the data state; for
        a model trained from a reward alone, (None, None)."""
        from gfdsl.engine.rundir import load_data

        if self.compiled.graph.graph["dataset"] is None:
            return None, None
        train, test, _ = load_data(self.compiled)
        return train, test

    def __repr__(self) -> str:
        return f"<gfdsl.Spec {self.name} from {self.path}>"


def load(path: str | Path, plugins_: list[str] | None = None, **dims: int) -> Spec:
    """Read and check a `.gfn` file; `dims` override its dims (`gfdsl.load(p, T=10)`), as
    `--set T=10` does; `plugins_` are modules to load as `--plugin` does. Raises
    gfdsl.GfdslError with the diagnostics on any problem."""
    plugins.load(plugins_)
    return Spec(check_file(path, dims), dims)


def loads(text: str, path: str = "<string>", **dims: int) -> Spec:
    """As load(), from spec text."""
    plugins.load_installed()
    return Spec(check_source(text, dims, path), dims)


def train(spec: Spec | str | Path, options=None, overrides: dict[str, int] | None = None, **settings) -> dict:
    """Train as `gfdsl run` does and return summary.json's dict. `settings` are
    gfdsl.RunOptions fields (steps, batch, lr, seed, out, device, eval_n, ...), or pass a
    RunOptions; a run directory is written (default runs/<spec name>). An
    `on_checkpoint(step, model)` callback sees the model at every checkpoint."""
    from dataclasses import replace

    from gfdsl.engine.loop import train as _train
    from gfdsl.engine.rundir import RunOptions

    known = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"gfdsl.train() got unknown settings {unknown}; known: {sorted(known)}")
    opts = replace(options or RunOptions(progress=False), **settings)
    if isinstance(spec, Spec):
        if not Path(spec.path).is_file():
            raise ValueError(f"gfdsl.train() needs a spec read from a file (this one is {spec.path}); "
                             "write the text to a .gfn file and gfdsl.load() it")
        return _train(spec.path, opts, {**spec.overrides, **(overrides or {})})
    return _train(str(spec), opts, overrides)
