# Sourced by experiments/device_sweep.sh and experiments/device_qlora_smoke.sh on a lent GPU machine (layout of .dev/: see
# the header of device_sweep.sh). Needs WORK; defines:
#   device_install  the carried wheels and bitsandbytes into $WORK/site; sets PY=python3 and PYTHONPATH
#   device_model    materialises .dev/smol16.gguf.gz once into $MODEL=$WORK/smol16 (uses $PY)
MODEL=$WORK/smol16

device_install() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    .dev/whl/*.whl || { echo "pip install failed"; return 1; }
  cp -r .dev/site/bitsandbytes "$WORK/site/"
  export PYTHONPATH="$WORK/site:$PWD/src"
  PY=python3
}

device_model() {
  [ -f "$MODEL/config.json" ] && return 0
  gunzip -c .dev/smol16.gguf.gz > "$WORK/smol16.gguf"
  $PY -c "from pathlib import Path; from llmrec.llm.loading import materialize_gguf as m; m(Path('$WORK/smol16.gguf'), Path('$MODEL'))" \
    > "$WORK/materialise.log" 2>&1
  [ -f "$MODEL/config.json" ] || { tail -20 "$WORK/materialise.log"; return 1; }
}
