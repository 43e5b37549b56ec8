#!/usr/bin/env bash
# Prints the median (and mean) of every criterion benchmark of the last run, from
# target/criterion/*/*/new/estimates.json. Usage: scripts/bench-medians.sh [GROUP]
set -euo pipefail
cd "$(dirname "$0")/../target/criterion"
for f in ${1:-*}/*/new/estimates.json; do
  python3 - "$f" <<'PY'
import json, sys
path = sys.argv[1]
e = json.load(open(path))
name = "/".join(path.split("/")[:2])
print(f"{name:<75} median {e['median']['point_estimate']:>9.1f} ns   mean {e['mean']['point_estimate']:>9.1f} ns")
PY
done
