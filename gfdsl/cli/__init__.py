"""The `gfdsl` command line (gfdsl.cli.app)."""

from gfdsl.cli.app import entry, main  # noqa: F401
