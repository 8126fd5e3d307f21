#!/usr/bin/env bash
# Set everything up, then run the main job: train specs/ddpm.gfn (20k steps, one CPU
# thread, about 3-4 minutes), writing runs/ddpm/ with samples.npy, samples.png, metrics
# and summary.json; and draw every shipped spec's DAG into runs/diagrams/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
gfdsl() { "$PY" -m gfdsl "$@"; }  # works whether or not pip's script folder is on PATH
out=${GFDSL_QUICKSTART_OUT:-runs/ddpm}
if [ -e "$out" ]; then out="$out-$(date +%Y%m%d-%H%M%S)"; fi
gfdsl check specs/*.gfn
gfdsl run specs/ddpm.gfn --out "$out"
mkdir -p runs/diagrams
for spec in specs/*.gfn; do
  name=$(basename "$spec" .gfn)
  gfdsl render "$spec" -o "runs/diagrams/$name.dot" >/dev/null
  if command -v dot >/dev/null 2>&1; then gfdsl render "$spec" -o "runs/diagrams/$name.svg" >/dev/null; fi
done
echo "samples: $out/samples.png   summary: $out/summary.json   diagrams: runs/diagrams/"
