"""One short driver that chains the phases; the CLI and the Python API both call it.

parse (text -> AST) -> check (AST -> CheckedSpec) -> ir.build (-> networkx DiGraph)
-> ir.validate. Lowering to torch is a later phase and is imported only when needed.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from gfdsl import ir, plugins

from gfdsl.lang import ast
from gfdsl.lang.check import CheckedSpec, check
from gfdsl.lang.parse import parse
from gfdsl.files import Inputs, decode_source, read_source
from gfdsl.lang.source import Source


@dataclass
class Compiled:
    """Everything the front end knows about one spec."""

    source: Source
    ast: ast.Model
    spec: CheckedSpec
    graph: nx.DiGraph


def check_source(source: Source | str, overrides: dict | None = None,
                 path: str = "<string>", inputs=None) -> Compiled:
    """Run the front end on text. Raises GfdslError (sorted diagnostics) on any problem.
    The files the spec names are checked (existence, header) only where `inputs` says
    where they are: check_file passes the spec's folder; text alone has none."""
    plugins.load_installed()  # entries a spec may name, from installed packages (once)
    if isinstance(source, str):
        source = decode_source(path, source.encode("utf-8", errors="surrogatepass"))
    with _gc_paused():
        model = parse(source)
        spec = check(source, model, overrides, inputs)
        g = ir.build(spec)
        ir.validate(g, source)
    return Compiled(source, model, spec, g)


@contextlib.contextmanager
def _gc_paused():
    """The cyclic collector off while the front end runs: an unrolled spec allocates
    millions of small objects that all stay alive (AST, checked spec, IR), and the
    collector's full passes over them were a third of `check`'s time at 100,000 states;
    whatever is cyclic garbage is collected once it is back on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def check_file(path: str | Path, overrides: dict | None = None, inputs=None) -> Compiled:
    """Read and check one `.gfn` file; `inputs` finds the files it names (a run folder's
    copies and recorded spec folder; default: beside the spec)."""
    src = read_source(path)
    return check_source(src, overrides, inputs=inputs or Inputs.beside(src.path))


def build_ir(path: str | Path, overrides: dict[str, int] | None = None) -> nx.DiGraph:
    """The validated IR of a spec file."""
    return check_file(path, overrides).graph
