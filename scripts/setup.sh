#!/usr/bin/env bash
# Set up gfdsl on a fresh machine (idempotent; safe to re-run).
#  1. Graphviz's `dot` from Debian's package where apt can install it (optional: .dot
#     output and everything else work without it).
#  2. torch==2.13.0 first: on these machines that pin is a CPU wheel already on disk; a
#     looser requirement would make pip download a multi-GB CUDA build.
#  3. gfdsl itself, editable, with its run-time, test and logging extras, and the example plugin
#     (examples/gfdsl_ising) that the test suite exercises.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore)

if ! command -v dot >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz; } >/dev/null 2>&1 \
      || echo "setup: could not install graphviz; diagrams will be written as .dot only" >&2
  else
    echo "setup: graphviz's dot is missing (install the 'graphviz' package for .svg/.png diagrams)" >&2
  fi
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "${PIP[@]}" torch==2.13.0
fi
"${PIP[@]}" -e ".[torch,dev,log]"
# the example plugin: no dependencies to fetch, built with the setuptools already here
"${PIP[@]}" --no-deps --no-build-isolation -e examples/gfdsl_ising
