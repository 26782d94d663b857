#!/usr/bin/env bash
# Every GPU-only check, as one command for a lent GPU machine (its python3 has torch + triton):
#   1. the Triton col kernels against the reference, compiled on the device (small and production tiles)
#   2. benchmarks/col_gpu.py: the col layer, frozen / reference / torch fused / Triton (T=8192, 4096^2, bf16)
# Run from the repository root; writes its log to ${OUT:-.}/gpu_check.log. Takes a few minutes.
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
log="${OUT:-.}/gpu_check.log"
{
  python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())'
  python3 tests/kernels/triton_interpret_cases.py --cuda
  python3 benchmarks/col_gpu.py --repeats 20
  python3 benchmarks/col_gpu.py --tokens 2048 --repeats 20
} 2>&1 | tee "$log"
