#!/usr/bin/env bash
# The device call, at most ~9.5 minutes: both arms, both stages, at once and within a time limit each, packed into
# $OUT (pack.py); benchmarks/gpu_check.py; then the GPU measurements of issue 9 (benchmarks/gpu_suite.py) in the
# time left. Run from the repository root with the data of build_corpus.py copied into .nano/ (git-excluded) and
# carried xz-compressed (25 MB -> 6 MB; once the full-size weights are tracked, .nano itself would not fit the
# device call's 64 MiB):
#   here: tar -cJf .nano.tar.xz .nano        (git-excluded too)
#   device run: carry [".nano.tar.xz", ".compile_cache.bin"], command "bash recipes/nano/gpu_run.sh", timeout_s 595
#   (.compile_cache.bin: an earlier call's $OUT/compile_cache.bin on the same card, if there is one; see gpu_suite.py)
# Here, afterwards: python recipes/nano/pack.py --unpack FILES_AT ARM DEST, for ARM in bias and plain. The log says
# whether each arm passes the parse smoke test (smoke.py); if the plain arm fails, a second call at once (the
# machine keeps .nano/runs for a while) can redo stage 2 alone with a changed recipes/nano/sft.toml (fewer steps,
# say): python3 recipes/nano/train.py --work .nano --out /tmp/nano-models --arms plain --sft-only --pack "$OUT",
# then smoke.py again.
# One arm in a shorter call, no measurements: ARMS=bias TRAIN_S=170 STAGE1_S=105 STAGE2_S=30 END=0 bash recipes/nano/gpu_run.sh
# A CPU rehearsal: OUT=/tmp/out NANO_FLAGS=--tiny SUITE_FLAGS=--tiny CHECK=0 bash recipes/nano/gpu_run.sh
set -uo pipefail                                # no -e: the measurements run even if training fails
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TORCH_LOGS=recompiles   # a recompiling step shows in the log
END=${END:-570}                                 # seconds from the start by which everything is written
[ -f .nano.tar.xz ] && tar -xJf .nano.tar.xz
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} | tee "$OUT/run.log"
timeout "${TRAIN_S:-330}" python3 recipes/nano/train.py --work .nano --out /tmp/nano-models --pack "$OUT" \
    --together --arms ${ARMS:-bias plain} \
    --time-limits "${STAGE1_S:-185}" "${STAGE2_S:-50}" ${NANO_FLAGS:-} 2>&1 | tee -a "$OUT/run.log"
echo "training: exit ${PIPESTATUS[0]} after $SECONDS s" | tee -a "$OUT/run.log"
for arm in ${ARMS:-bias plain}; do
    echo "== $arm" >> "$OUT/run.log"; cat ".nano/runs/$arm.log" >> "$OUT/run.log" 2>/dev/null
    grep -E "^training|time limit|validation|ecompil|rror|wrote|: [0-9]+ s$" ".nano/runs/$arm.log" | sed "s/^/$arm: /"
    grep -E "^step [0-9]*00/" ".nano/runs/$arm.log" | sed "s/^/$arm: /" | tail -4
done
for arm in ${ARMS:-bias plain}; do                # can it ship? (the smoke test of tests/test_nano.py, seconds)
    [ -d "/tmp/nano-models/$arm" ] && timeout 60 python3 recipes/nano/smoke.py "/tmp/nano-models/$arm" \
        --device "$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')" 2>&1 \
        | tee -a "$OUT/run.log" | grep "^smoke"
done
if [ "$END" -gt 0 ] && [ "${CHECK:-1}" = 1 ]; then   # the training path's GPU checks (bias gradients, resume): ~1 minute
    timeout 150 python3 benchmarks/gpu_check.py --tokenizer .nano/tokenizer 2>&1 | tee -a "$OUT/run.log" \
        | grep -E "diff|exact|fell|rror"
fi
budget=$((END - SECONDS - 15))
if [ "$budget" -gt 60 ]; then
    timeout $((budget + 15)) python3 benchmarks/gpu_suite.py --out "$OUT/gpu_suite.json" --budget "$budget" \
        --compile-cache .compile_cache.bin ${SUITE_FLAGS:-} 2>&1 \
        | tee "$OUT/gpu_suite.log"
fi
# the weights come first: drop the suite's compile cache if it would push $OUT past the 64 MiB that comes back
if [ -f "$OUT/compile_cache.bin" ] && [ "$(du -sm "$OUT" | cut -f1)" -gt 62 ]; then
    rm "$OUT/compile_cache.bin"; echo "compile_cache.bin dropped: \$OUT over 62 MiB" | tee -a "$OUT/run.log"
fi
echo "done after $SECONDS s"
