"""One short driver that chains the phases; the CLI and the Python API both call it.

parse (text -> AST) -> check (AST -> CheckedSpec) -> ir.build (-> networkx DiGraph)
-> ir.validate. Lowering to torch is a later phase and is imported only when needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from gfdsl import ir, plugins

from gfdsl.lang import ast
from gfdsl.lang.check import CheckedSpec, check
from gfdsl.lang.parse import parse
from gfdsl.files import decode_source, read_source
from gfdsl.lang.source import Source


@dataclass
class Compiled:
    """Everything the front end knows about one spec."""

    source: Source
    ast: ast.Model
    spec: CheckedSpec
    graph: nx.DiGraph


def check_source(source: Source | str, overrides: dict[str, int] | None = None,
                 path: str = "<string>") -> Compiled:
    """Run the front end on text. Raises GfdslError (sorted diagnostics) on any problem."""
    plugins.load_installed()  # entries a spec may name, from installed packages (once)
    if isinstance(source, str):
        source = decode_source(path, source.encode("utf-8", errors="surrogatepass"))
    model = parse(source)
    spec = check(source, model, overrides)
    g = ir.build(spec)
    ir.validate(g, source)
    return Compiled(source, model, spec, g)


def check_file(path: str | Path, overrides: dict[str, int] | None = None) -> Compiled:
    """Read and check one `.gfn` file."""
    return check_source(read_source(path), overrides)


def build_ir(path: str | Path, overrides: dict[str, int] | None = None) -> nx.DiGraph:
    """The validated IR of a spec file."""
    return check_file(path, overrides).graph
