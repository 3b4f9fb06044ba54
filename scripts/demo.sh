#!/usr/bin/env bash
# The main job on the embedded defaults, end to end on a CPU:
#   1. prepare a real data set (Amazon Beauty by default) and print its statistics;
#   2. LoRA fine-tune the embedded SmolLM2-135M-Instruct briefly (configs/demo_beauty.yaml: the selected recipe --
#      first 4 layers, item tokens initialised from titles + co-occurrence factors -- cut to 1.5 epochs);
#   3. print recommendations with titles for a sample user, and the test metrics of the brief run.
# Usage: scripts/demo.sh DATA_DIR OUT_DIR   (llmrec must be on PATH; `make demo` does that)
set -euo pipefail
DATA_DIR=${1:-${LLMREC_DATA_DIR:-data}}
OUT=${2:-runs/demo}
DATASET=${LLMREC_DEMO_DATASET:-beauty}
CONFIG=${LLMREC_DEMO_CONFIG:-configs/demo_beauty.yaml}
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/3  llmrec prepare $DATASET --data_dir $DATA_DIR --output_dir $OUT/$DATASET"
llmrec prepare "$DATASET" --data_dir "$DATA_DIR" --output_dir "$OUT/$DATASET" --overwrite

echo "== 2/3  llmrec train --config $CONFIG --data $OUT/$DATASET --output_dir $OUT/llm"
# --overwrite replaces the demo's previous run (only files llmrec wrote) and refuses any other directory
llmrec train --config "$CONFIG" --data "$OUT/$DATASET" --output_dir "$OUT/llm" --overwrite true

echo "== 3/3  llmrec recommend for a sample user (the history is that user's test-split history)"
# one raw item id per line -> one --history value per item
mapfile -t HISTORY < <(python - "$OUT/$DATASET" <<'PY'
import sys
from llmrec.data import load_prepared
d = load_prepared(sys.argv[1])
hist, target = d.split("test")
u = 7
print("\n".join(d.catalog.raw_ids[i] for i in hist[u][-10:]))
print(f"(held-out next item of this user: {d.catalog.raw_ids[target[u]]} {d.catalog.titles[target[u]]})", file=sys.stderr)
PY
)
[ "${#HISTORY[@]}" -gt 0 ] || { echo "demo: no sample history found in $OUT/$DATASET" >&2; exit 1; }
llmrec recommend --run "$OUT/llm" --history "${HISTORY[@]}" -k 10
echo "== done in $(( $(date +%s) - start )) s; run directory: $OUT/llm"
