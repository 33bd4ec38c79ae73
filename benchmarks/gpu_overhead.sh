#!/usr/bin/env bash
# GPU check for the device machine: fwbench's step time against the plain loops' on cuda.
# Usage: FWBENCH_DATA=<dir of MNIST IDX files> bash benchmarks/gpu_overhead.sh OUTDIR
set -uo pipefail
out=${1:?usage: gpu_overhead.sh OUTDIR}
source "$(dirname "$0")/checkout_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, jax, flax, optax; print('torch', torch.__version__, 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
python3 benchmarks/overhead.py --device cuda --out "$out"
python3 benchmarks/plain_torch.py --device cuda --steps 200 | tee "$out/plain_torch_cuda.json"
python3 benchmarks/plain_flax.py --device cuda --steps 200 | tee "$out/plain_flax_cuda.json"
