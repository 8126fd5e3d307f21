#!/usr/bin/env bash
# Set everything up, then run the whole test suite (tests/ and every spec in specs/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
set +e
"$PY" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests; is the checkout complete?" >&2
  exit 1
fi
exit "$rc"
