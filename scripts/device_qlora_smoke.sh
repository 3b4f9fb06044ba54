#!/usr/bin/env bash
# QLoRA smoke on a lent GPU machine: install the carried wheels, materialise the trimmed model, 200 4-bit steps,
# validation, a 2000-user test and one `llmrec recommend`. Same .dev/ layout as scripts/device_sweep.sh.
set -u
W=/tmp/q; mkdir -p $W
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $W/site .dev/whl/*.whl || exit 1
cp -r .dev/site/bitsandbytes $W/site/
export PYTHONPATH=$W/site:$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 HF_HUB_OFFLINE=1
gunzip -c .dev/smol16.gguf.gz > $W/m.gguf
python3 -c "from pathlib import Path; from llmrec.modeling.lm import materialize_gguf as m; m(Path('$W/m.gguf'), Path('$W/m'))" > $W/mat.log 2>&1 || tail -5 $W/mat.log
python3 -c "import bitsandbytes as b; print('bnb', b.__version__)"
timeout 150 python3 -m llmrec.train --config configs/llm_beauty_mask_wsd.yaml --data .dev/beauty-llm --model $W/m --output_dir $W/run --load_in_4bit true --mixed_precision bf16 --item_mask_fill mean --max_steps 200 --eval_every 100 --eval_users 1000 --test_users 2000 --progress false --patience 0 2>&1 | grep -v -i "warn" | tail -25
python3 - <<'P'
import json; m=json.load(open('/tmp/q/run/metrics.json')); print({k: m[k] for k in ('steps','train_time_s','train_tokens_per_s','best_valid','test') if k in m})
P
python3 -m llmrec.cli recommend --run $W/run --history "1,2,3" -k 3 2>&1 | grep -v -i warn | tail -5
