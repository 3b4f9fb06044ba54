#!/usr/bin/env bash
# The main job on the embedded defaults: prepare a real data set and print its statistics.
# Usage: scripts/demo.sh DATA_DIR OUT_DIR   (llmrec must be on PATH; `make demo` does that)
set -euo pipefail
DATA_DIR=${1:-${LLMREC_DATA_DIR:-data}}
OUT=${2:-runs/demo}
DATASET=${LLMREC_DEMO_DATASET:-beauty}
mkdir -p "$OUT"
echo "== llmrec prepare $DATASET --data-dir $DATA_DIR --out $OUT/$DATASET"
llmrec prepare "$DATASET" --data-dir "$DATA_DIR" --out "$OUT/$DATASET" --overwrite
