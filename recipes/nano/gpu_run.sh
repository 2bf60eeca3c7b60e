#!/usr/bin/env bash
# The device call: both arms, both stages, packed into $OUT (see README.md). Run from the repository root with
# the data of build_corpus.py copied into .nano/ (git-excluded) and carried:
#   device run: carry [".nano"], command "bash recipes/nano/gpu_run.sh"
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TORCH_LOGS=recompiles   # a recompiling step shows in the log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 recipes/nano/train.py --work .nano --out /tmp/nano-models --pack "$OUT" 2>&1 | tee "$OUT/train.log" \
    | grep -E "^step [0-9]+/[0-9]+ \| loss|validation|^(bias|plain)|pieces|Error|error|ecompil" | awk 'NR % 5 == 1 || /validation|bias|plain|pieces|rror|ecompil/'
