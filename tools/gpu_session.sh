#!/usr/bin/env bash
# Issue 9's measurements on a lent GPU with nothing else to run beside them (tools/nano_gpu_run.sh runs them
# after the nano training instead). First the suite's compiling entries, several processes at a time
# (tools/gpu_prewarm.py: they fill inductor's on-disk caches; their own figures, taken on a shared GPU, are
# logged, never reported), then tools/gpu_suite.py alone on the GPU, loading what they compiled. For one
# device call of ~9 minutes, from the repository root:
#
#   bash tools/gpu_session.sh
#   PREWARM_UNTIL=0 SUITE_BUDGET=200 SKIP_DONE=/tmp/gpu_suite_1.json bash tools/gpu_session.sh  # a next call
#
# Knobs: PREWARM_UNTIL (s, 250), PREWARM_JOBS (6), SUITE_BUDGET (s, 270), SUITE_FLAGS (e.g. --tiny: a CPU check).
# Writes $OUT/gpu_suite.json (also kept as /tmp/gpu_suite_1.json for a next call), $OUT/prewarm.json and the logs.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TORCH_LOGS=recompiles     # a recompiling step shows in the log
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
until=${PREWARM_UNTIL:-250}
if [ "$until" -gt 0 ]; then
    python3 tools/gpu_prewarm.py --jobs "${PREWARM_JOBS:-6}" --until "$until" --out /tmp/prewarm.json \
        ${SUITE_FLAGS:-} > "$OUT/prewarm.log" 2>&1
    cp /tmp/prewarm.json "$OUT/prewarm.json"
    grep -E "prewarm" "$OUT/prewarm.log" | cut -c1-240
fi
skip=()
[ -n "${SKIP_DONE:-}" ] && skip=(--skip-done $SKIP_DONE)
prewarmed=()
[ -f /tmp/prewarm.json ] && prewarmed=(--prewarmed /tmp/prewarm.json)
budget=${SUITE_BUDGET:-270}
timeout $((budget + 20)) python3 tools/gpu_suite.py --out "$OUT/gpu_suite.json" --budget "$budget" \
    "${prewarmed[@]}" "${skip[@]}" ${SUITE_FLAGS:-} > "$OUT/gpu_suite.log" 2>&1
echo "suite rc $?"
n=1; while [ -f "/tmp/gpu_suite_$n.json" ]; do n=$((n + 1)); done
cp "$OUT/gpu_suite.json" "/tmp/gpu_suite_$n.json" 2>/dev/null
grep -vE "^\[|recompil|USDT|^ *$" "$OUT/gpu_suite.log" | tail -60
