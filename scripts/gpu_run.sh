#!/usr/bin/env bash
# One GPU visit in one go: install, train for a wall-clock budget, export, measure the GPU path.
#
#   scripts/gpu_run.sh OUTDIR MINUTES [extra `aezip train` options]
#
# Reads training/validation images from $AEZIP_GPU_DATA (default .gpu/data/{train,val}, filled by
# scripts/prepare_gpu_carry.sh) and the
# wheels the GPU machine lacks (zstandard, constriction, threadpoolctl) from $AEZIP_GPU_WHEELS (default .whl);
# both are ignored folders carried beside the tree. Continues the shipped default model with
# --init when its architecture is the one trained here, otherwise starts from scratch.
# Leaves in OUTDIR (at most 8 files, each far under 16 MiB): model.safetensors, its card
# model.safetensors.json, the training log (model.safetensors.log.jsonl), train.txt (console),
# gpu_speed.json and speed.txt (the step-variant benchmark is in the log and train.txt; the
# data path archive → GPU tensors is in gpu_speed.json). The model is exported before any measurement, so a failure
# later never costs the training. The same script runs on a CPU with a budget of seconds
# (tests/test_gpu_script.py).
set -uo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 OUTDIR MINUTES [train options]" >&2
    exit 2
fi
OUTDIR=$1
MINUTES=$2
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${AEZIP_GPU_DATA:-$ROOT/.gpu/data}
WHEELS=${AEZIP_GPU_WHEELS:-$ROOT/.whl}
CHANNELS=${AEZIP_GPU_CHANNELS:-128}
BOTTLENECK=${AEZIP_GPU_BOTTLENECK:-320}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d)
cd "$ROOT" || exit 1

# 1. Install: the wheels the machine lacks, then the project itself from the tree.
if ! python3 -c "import zstandard, constriction, threadpoolctl" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl \
        || { echo "cannot install the wheels in $WHEELS" >&2; exit 1; }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 - <<'PY' || exit 1
import torch, aezip
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"aezip {aezip.__version__} on torch {torch.__version__}, {name}")
PY

# 2. Train: continue the default model when its architecture matches, else from scratch.
# The default is whatever the package catalog names (never a fixed file name: each release adds one).
# Prints the default's path; exit 0 when its architecture is the one trained here, 3 when not.
INIT=()
DEFAULT=$(python3 - "$CHANNELS" "$BOTTLENECK" <<'PY'
import sys
from aezip.model.registry import default_model_path
from aezip.model.weights import load_model
path = default_model_path()
c = load_model(path).config
print(path)
sys.exit(0 if (c.channels, c.bottleneck, c.levels) == (int(sys.argv[1]), int(sys.argv[2]), 4) else 3)
PY
)
case $? in
    0) INIT=(--init "$DEFAULT")
       echo "continuing the default model ($DEFAULT)" | tee "$OUTDIR/train.txt" ;;
    3) echo "default model has another architecture: training ${CHANNELS}/${BOTTLENECK} from scratch" \
           | tee "$OUTDIR/train.txt" ;;
    *) echo "cannot read the shipped default model" >&2; exit 1 ;;
esac
# The step variant is chosen on the machine itself: --variant auto times the candidates (eager,
# fp32, compiled, CUDA graphs; batch and twice it) as training steps, then trains on with the
# fastest. Options given to this script come last and win (e.g. --variant eager).
python3 -m aezip train --data "$DATA/train" --val "$DATA/val" --out "$WORK/model.safetensors" \
    --minutes "$MINUTES" --steps 10000000 --channels "$CHANNELS" --bottleneck "$BOTTLENECK" "${INIT[@]}" \
    --variant auto --bench-seconds "${AEZIP_GPU_BENCH_SECONDS:-40}" "$@" \
    2>&1 | tee -a "$OUTDIR/train.txt"
status=${PIPESTATUS[0]}
for f in model.safetensors model.safetensors.json model.safetensors.log.jsonl; do
    [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUTDIR/$f"
done
if [ "$status" -ne 0 ] || [ ! -f "$OUTDIR/model.safetensors" ]; then
    echo "training failed (exit $status)" >&2
    exit 1
fi

# 3. Measure the GPU path with the new model (bounded, so it cannot eat the visit).
timeout "${AEZIP_GPU_SPEED_SECONDS:-150}" python3 -m benchmarks.gpu_speed "$DATA/val" \
    --model "$OUTDIR/model.safetensors" --out "$OUTDIR/gpu_speed.json" ${AEZIP_GPU_SPEED_ARGS:-} \
    2>&1 | tee "$OUTDIR/speed.txt"
echo "done: $(ls "$OUTDIR" | tr '\n' ' ')"
