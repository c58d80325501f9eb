#!/usr/bin/env bash
# Prepared for a machine with an NVIDIA GPU; it has NOT run yet (the project is developed without a GPU).
# About 10 minutes: `bash benchmarks/gpu.sh [OUT_DIR]` from the repository root, with `.[export,dev,trt]`
# installed and a CUDA build of torch.
#   1. the torch CUDA FP16 baseline of every released component (seeded random weights) at its bundle's opt
#      shape: the reference any TensorRT figure is compared with  -> OUT_DIR/gpu-torch-fp16.json
#   2. the runtime's CUDA code against the real driver: the tests marked `gpu` (TensorRT sessions on
#      Polygraphy's runner: device buffers, stream, engine build and reload)  -> OUT_DIR/gpu-tests.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${1:-outputs/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.csv"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'a CUDA build of torch is needed'; print(torch.__version__, torch.version.cuda)"
timeout 420 "$PYTHON" -m benchmarks.gpu --json "$OUT/gpu-torch-fp16.json" | tee "$OUT/gpu-torch-fp16.txt"
timeout 150 "$PYTHON" -m pytest -q -m gpu tests/ -rs | tee "$OUT/gpu-tests.txt"
