#!/usr/bin/env bash
# The GPU suite for the device machine: fwbench bench --suite gpu, then the plain loops' epochs and the
# harness overhead on cuda. Everything lands in OUTDIR; commit it under results/<card>/.
# Usage: FWBENCH_DATA=<dir of MNIST IDX files> bash benchmarks/gpu_bench.sh OUTDIR [PART] [BENCH ARGS]
# PART: suite, checks, plain, dp, diagnose or all. Each part fits one 10-minute device call; "all", the default,
# runs suite, checks and plain. BENCH ARGS go to the suite's `fwbench bench`, e.g. `--models cnn --repeat 3`
# where the device time is short.
set -uo pipefail
out=${1:?usage: gpu_bench.sh OUTDIR [suite|checks|plain|dp|diagnose|all] [BENCH ARGS]}
part=${2:-all}
extra=("${@:3}")
source "$(dirname "$0")/checkout_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m fwbench backends | tee -a "$out/gpu.txt"
if [[ $part == suite || $part == all ]]; then
  python3 -c "import cupy; print('cupy', cupy.__version__)" 2>&1 | tail -n 1 | tee -a "$out/gpu.txt"
  # Without CuPy the numpy cells record why they cannot use cuda; the rest of the suite runs.
  # The conformance kit per mode runs in the checks part, so the timing fits one call; rows show it as not run.
  python3 -m fwbench bench --suite gpu --no-conformance --out "$out" "${extra[@]}"
  python3 -m fwbench report "$out"/bench-gpu-*.json --out "$out/report.md"
fi
if [[ $part == checks || $part == all ]]; then
  for name in torch torch@compile torch@cudagraphs flax flax@scan flax@scan-tuned; do
    python3 -m fwbench conformance "$name" --device cuda --json > "$out/conformance-$name.json"
  done
fi
if [[ $part == plain || $part == all ]]; then
  # The issue's reference figures are epochs of plain loops: torch eager, flax per step, flax scan.
  python3 benchmarks/plain_torch.py --device cuda --epochs 2 | tee "$out/plain_torch_epochs.jsonl"
  python3 benchmarks/plain_flax.py --device cuda --epochs 2 | tee "$out/plain_flax_epochs.jsonl"
  python3 benchmarks/plain_flax.py --device cuda --epochs 2 --kernels | tee -a "$out/plain_flax_epochs.jsonl"
  python3 benchmarks/plain_flax_scan.py --device cuda --epochs 2 --kernels | tee "$out/plain_flax_scan_epochs.jsonl"
  python3 benchmarks/overhead.py --device cuda --frameworks torch,flax,flax@scan-tuned --rounds 3 --steps 200 --out "$out"
fi
if [[ $part == dp ]]; then
  # Issue 15's smoke test on one GPU: NCCL under torch@ddp and a one-device mesh under flax@dp, each against the
  # single-process reference, then a short bench of both beside their 1-worker baselines. File names keep to
  # letters, digits, '.', '-' and '_' (the device tool returns no others).
  python3 -m fwbench agree --backends numpy,torch@ddp,flax@dp --device cuda --dtype float64 --steps 3 --json \
    > "$out/agree-dp-float64.json"
  python3 -m fwbench bench --suite quick --backends torch@ddp,flax@dp --device cuda --models mlp --repeat 3 \
    --out "$out"
  for name in torch@ddp flax@dp; do
    python3 -m fwbench conformance "$name" --device cuda --json > "$out/conformance-${name/@/-}.json"
  done
fi
if [[ $part == diagnose ]]; then
  # Which step of torch@cudagraphs's and stock flax's updates leaves the float64 reference on cuda, and whether
  # models built before it in the process matter (the kit's failures of 2026-12-04, results/h200/20261204/).
  python3 benchmarks/gpu_diagnose.py --device cuda | tee "$out/diagnose.jsonl"
fi
