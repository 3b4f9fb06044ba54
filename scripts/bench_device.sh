#!/usr/bin/env bash
# Run pending benchmark trials of some models on a borrowed machine (e.g. a lent GPU) for a fixed time and bring back
# their trial records (issue #20; `llmrec benchmark --records`, README "Benchmarks").
#
# Usage, from the repository root on that machine:
#   scripts/bench_device.sh SUITE BENCH_DIR RECORDS MODELS JOBS SECONDS [OUT]
#     SUITE      configs/benchmarks/NAME.yaml
#     BENCH_DIR  a benchmark directory whose data/ is already prepared (carry it: its data/ is a few MB), e.g.
#                runs/bench-beauty; trials run under it
#     RECORDS    the committed records, e.g. docs/benchmarks/beauty/records: finished trials are not run again
#     MODELS     comma-separated suite model names whose pending tuning trials run, in plan order (e.g. sasrec,gru4rec)
#     JOBS       trials at a time (on one GPU, several small baselines share it; each gets one CPU thread)
#     SECONDS    wall-clock budget: no trial starts after it, running ones are stopped at it (and lost)
#     OUT        where records.tgz (the new records only) and bench_device.log go (default: $OUT, else .)
# Back home: tar xzf records.tgz -C RECORDS, then commit RECORDS.
# On the lent GPU (`device` tool): carry BENCH_DIR/data and BENCH_DIR/suite.yaml (made here by `llmrec benchmark
# --plan true`); it has torch but not this package, so run with PYTHONPATH=src; `--device auto` in the plan lines
# picks CUDA there. The LLM trials need the 135M GGUF model, larger than what travels: run baselines there.
set -euo pipefail
[ $# -ge 6 ] || { sed -n 2,20p "$0"; exit 2; }
suite=$1 bench=$2 records=$3 models=$4 jobs=$5 budget=$6 out=${7:-${OUT:-.}}
py=${PYTHON:-python3}
deadline=$(($(date +%s) + budget))
log=$out/bench_device.log
mkdir -p "$out"
marker=$(mktemp)
echo "$(date -u +%FT%TZ) bench_device: $suite models=$models jobs=$jobs budget=${budget}s" | tee "$log"
"$py" -m llmrec benchmark --suite "$suite" --output_dir "$bench" --records "$records" --plan true >>"$log" 2>&1
queue=$(mktemp)
for m in ${models//,/ }; do
    grep -- "/trials/[^/]*/$m/t[0-9]* " "$bench/plan.txt" >>"$queue" || true
done
echo "$(wc -l <"$queue") trial(s) queued" | tee -a "$log"

run_one() {  # one plan line, stopped at the deadline
    left=$(($1 - $(date +%s)))
    [ "$left" -gt 30 ] || exit 0
    shift
    local all="$*" code=0
    local dir=${all##*--output_dir }
    dir=${dir%% *}
    mkdir -p "$(dirname "$dir")"
    OMP_NUM_THREADS=1 timeout "$left" "${PYTHON:-python3}" -m llmrec "${@:2}" >"$dir.log" 2>&1 || code=$?
    echo "$(date -u +%TZ) exit $code: ${dir#*/trials/}"
}
export -f run_one
# each line is `llmrec baseline ...`: drop the leading `llmrec`, keep the words (no spaces inside plan values)
xargs -P "$jobs" -L 1 bash -c 'run_one '"$deadline"' "$@"' _ <"$queue" | cut -c1-200 | tee -a "$log" || true
"$py" -m llmrec benchmark --suite "$suite" --output_dir "$bench" --records "$records" --collect true >>"$log" 2>&1 || true
(cd "$records" && find . -type f -newer "$marker" | sort >"$marker.list")
tar czf "$out/records.tgz" -C "$records" -T "$marker.list"
echo "$(date -u +%FT%TZ) $(grep -c '\.json$' "$marker.list" || true) new record(s) in $out/records.tgz" | tee -a "$log"
