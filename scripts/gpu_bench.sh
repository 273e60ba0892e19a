#!/usr/bin/env bash
# Every GPU figure of the README's speed section, in a few minutes on one GPU (synthetic data: no
# dataset is needed). Run from the repository root:  bash scripts/gpu_bench.sh [python]
# Prints: lifelong against the bare loop for finetune, LwF, ABD (synthesis and training), MIND and
# CLR on CIFAR- and ImageNet-shaped data, fp32 and each speed option, with checkpoint costs; the
# batch augmentation; cached against uncached evaluation; and the fixed cost of a run.
set -euo pipefail
PY=${1:-${PYTHON:-python}}
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
B="$PY scripts/benchmark.py --device cuda"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name(0))"
echo "== fp32, default options"
$B
echo "== bf16-mixed"
$B --precision bf16-mixed
echo "== bf16-mixed + channels_last + data on device"
$B --precision bf16-mixed --channels-last --data-on-device   # MIND is refused: NCHW allocation
$B --precision bf16-mixed --data-on-device --methods mind
echo "== + torch.compile (finetune, LwF, CLR: fixed shapes within a phase)"
$B --precision bf16-mixed --channels-last --data-on-device --compile --methods finetune,lwf,clr --shapes cifar
echo "== augmentation"
$B --augment-only
echo "== evaluation: cached against uncached (MIND, CLR)"
$B --evaluation
echo "== MIND inference: in-place swapping vs copies"
"$PY" scripts/bench_mind.py --device cuda
echo "== fixed cost (CPU side of a run)"
"$PY" scripts/bench_fixed_cost.py --repeat 1
