#!/usr/bin/env bash
# One training stage on a lent GPU machine (the `device` tool), sized to end inside one call.
#
#   scripts/gpu_stage.sh --prepare                    # here: copy ../shared/data into .carry/ (git-ignored)
#   run(command="scripts/gpu_stage.sh configs/train/stage6_gpu.yaml", carry=[".carry"])   # there
#
# There, `python3` holds PyTorch (CUDA) and OpenCV; needletrack runs from src/ (no install). The real data
# comes from .carry/shared_data, linked as ../shared/data where the configs look for it. The run stops
# cleanly after MAX_MINUTES (default 7) and writes best/last.safetensors, checkpoint.pt, summary.json,
# train_log.csv, val_log.csv and config.yaml to $OUT/stage/ (at most 8 files come back). To continue a stage,
# put the returned checkpoint.pt (and last.safetensors) in .carry/resume/ before the next call: it resumes.
# On a machine without CUDA it runs on the CPU, which is how it is tested (tests/test_gpu_stage.py).
set -euo pipefail
cd "$(dirname "$0")/.."
carry="${CARRY:-.carry}"      # the carried folder (git-ignored)
if [[ "${1:-}" == "--prepare" ]]; then
    src="${NEEDLETRACK_SHARED_DATA:-../shared/data}"
    [[ -d "$src" ]] || { echo "gpu_stage: no shared data at $src" >&2; exit 2; }
    mkdir -p "$carry"
    rm -rf "$carry/shared_data.tmp" && cp -rL "$src" "$carry/shared_data.tmp"
    rm -rf "$carry/shared_data" && mv "$carry/shared_data.tmp" "$carry/shared_data"
    du -sh "$carry"
    exit 0
fi
config="${1:?usage: scripts/gpu_stage.sh CONFIG [train options] | --prepare}"
shift
[[ -f "$config" ]] || { echo "gpu_stage: no config $config" >&2; exit 2; }
out="${OUT:-runs/gpu_stage}/stage"
mkdir -p "$out"
if [[ -d "$carry/shared_data" && ! -e ../shared/data ]]; then
    mkdir -p ../shared && ln -s "$(cd "$carry" && pwd)/shared_data" ../shared/data
fi
resume=()
if [[ -f "$carry/resume/checkpoint.pt" ]]; then
    cp "$carry"/resume/* "$out"/ && resume=(--resume)
fi
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$py" -c "import torch; print('gpu_stage: torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec "$py" -m needletrack train "$config" --out "$out" --max-minutes "${MAX_MINUTES:-7}" --no-progress \
    "${resume[@]}" "$@"
