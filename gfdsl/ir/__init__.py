"""The IR phase: build the networkx DAG from a checked spec, validate it, print it,
draw it (gfdsl.ir.render). Plain data only; nothing here imports torch."""

from gfdsl.ir.graph import build, dump, natural, steps_view, validate  # noqa: F401

__all__ = ["build", "validate", "dump", "natural", "steps_view"]
