#!/usr/bin/env bash
# Every GPU figure of the README's "Benchmarks" section, in a few minutes on one GPU (synthetic
# data: no dataset is needed). Run from the repository root:
#   bash scripts/gpu_bench.sh [python]             # on a GPU
#   bash scripts/gpu_bench.sh --dry-run [python]   # every step once at toy sizes on the CPU: checks it runs
# Prints: lifelong against the bare loop for finetune, LwF, ABD (synthesis and training), MIND and
# CLR on CIFAR- and ImageNet-shaped data, fp32 and each speed option, with checkpoint costs; ABD and
# MIND at their paper batches; the batch augmentation; cached against uncached evaluation and MIND's
# in-place inference; the checkpoint and evaluation shares of each paper-setting run; the fixed cost.
set -euo pipefail
DRY=""
if [[ "${1:-}" == "--dry-run" ]]; then DRY="--dry-run"; shift; fi
PY=${1:-${PYTHON:-python}}
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
if [[ -n "$DRY" ]]; then
  B="$PY scripts/benchmark.py --device cpu --threads 1 --dry-run"
  echo "dry run: toy sizes on the CPU, the figures mean nothing"
else
  B="$PY scripts/benchmark.py --device cuda"
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name(0))"
fi
echo "== fp32, default options"
$B
echo "== ABD at its paper batch (128 real + 128 synthetic; synthesis at 128), MIND at 256"
$B --methods abd --shapes cifar --batch-cifar 128
$B --methods mind --shapes cifar --batch-cifar 256
echo "== bf16-mixed"
$B --precision bf16-mixed
echo "== bf16-mixed + channels_last + data on device"
$B --precision bf16-mixed --channels-last --data-on-device   # MIND is refused: NCHW allocation
$B --precision bf16-mixed --data-on-device --methods mind
echo "== + torch.compile (finetune, LwF, CLR: fixed shapes within a phase)"
$B --precision bf16-mixed --channels-last --data-on-device --compile --methods finetune,lwf,clr --shapes cifar
echo "== augmentation"
$B --augment-only
echo "== evaluation: cached against uncached (MIND, CLR); MIND's inference in place against copies"
$B --evaluation
echo "== checkpoint and evaluation shares of each paper-setting run (projected from measured costs)"
$B --shares
echo "== fixed cost (CPU side of a run)"
"$PY" scripts/bench_fixed_cost.py --repeat 1
