"""`python -m gfdsl ...` runs the command line (as torchrun and tests do)."""

from gfdsl.cli.app import entry

entry()
