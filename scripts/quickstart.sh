#!/usr/bin/env bash
# Set everything up, then run the main job: check every shipped spec and draw its DAG
# into out/diagrams/ (SVG where Graphviz's dot is installed, DOT text always).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out/diagrams
gfdsl check specs/*.gfn
for spec in specs/*.gfn; do
  name=$(basename "$spec" .gfn)
  gfdsl render "$spec" -o "out/diagrams/$name.dot"
  if command -v dot >/dev/null 2>&1; then gfdsl render "$spec" -o "out/diagrams/$name.svg"; fi
done
