#!/usr/bin/env bash
# GPU check for the device machine: cuda agreement, then the default recipes on torch and flax.
# Usage: FWBENCH_DATA=<dir of MNIST IDX files> bash benchmarks/gpu_smoke.sh OUTDIR
set -uo pipefail
out=${1:?usage: gpu_smoke.sh OUTDIR}
source "$(dirname "$0")/checkout_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m fwbench backends | tee -a "$out/gpu.txt"
python3 benchmarks/cuda_agreement.py | tee "$out/cuda_agreement.json"
for model in cnn mlp; do
  python3 -m fwbench compare --model "$model" --backends torch,flax --device cuda --out "$out" --no-progress
done
