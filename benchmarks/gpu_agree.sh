#!/usr/bin/env bash
# Agreement on the GPU machine: torch and flax on cuda against the NumPy engine on the CPU.
# Usage: FWBENCH_DATA=<dir of MNIST IDX files> bash benchmarks/gpu_agree.sh OUTDIR
set -uo pipefail
out=${1:?usage: gpu_agree.sh OUTDIR}
source "$(dirname "$0")/checkout_env.sh"
for model in cnn mlp; do
  for dtype in float32 float64; do
    python3 -m fwbench agree --model $model --dtype $dtype --device auto --steps 100 --json \
      > "$out/agree-$model-$dtype.json"
    echo "agree $model $dtype: exit $?"
    python3 -m fwbench agree --model $model --dtype $dtype --device auto --ties --json \
      > "$out/agree-$model-$dtype-ties.json"
    echo "agree $model $dtype --ties: exit $?"
  done
done
