#!/usr/bin/env bash
# QLoRA smoke on a lent GPU machine: install the carried wheels, materialise the trimmed model, 200 4-bit steps,
# validation, a 2000-user test and one `llmrec recommend`. Same .dev/ layout as experiments/device_sweep.sh.
set -u
WORK=/tmp/q; mkdir -p $WORK
. experiments/device_setup.sh
device_install || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 HF_HUB_OFFLINE=1
device_model || exit 1
python3 -c "import bitsandbytes as b; print('bnb', b.__version__)"
timeout 150 python3 -m llmrec train --data .dev/beauty-llm --model $MODEL --output_dir $WORK/run --load_in_4bit true --mixed_precision bf16 --item_mask_fill mean --max_steps 200 --eval_every 100 --eval_users 1000 --test_users 2000 --progress false --patience 0 2>&1 | grep -v -i "warn" | tail -25
python3 - <<'P'
import json; m=json.load(open('/tmp/q/run/metrics.json')); print({k: m[k] for k in ('steps','train_time_s','train_tokens_per_s','best_valid','test') if k in m})
P
python3 -m llmrec recommend --run $WORK/run --history "1,2,3" -k 3 2>&1 | grep -v -i warn | tail -5
