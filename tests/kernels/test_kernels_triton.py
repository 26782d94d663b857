"""The Triton col kernels, run on the CPU by Triton's interpreter in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bone.kernels import triton_col

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.integration
def test_triton_col_matches_reference_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("triton_interpret_cases.py"))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK 8 cases")


def test_triton_path_not_selected_on_cpu():
    """Variant.fused("col") runs the torch ColFn for CPU tensors (and for r the kernels do not tile)."""
    x, w, blk = torch.zeros(2, 32), torch.zeros(32, 32), torch.zeros(2, 16, 16)
    assert not triton_col.usable(x, w, blk)
    assert not triton_col.usable(x, w, torch.zeros(4, 8, 8))


@pytest.mark.integration
@pytest.mark.parametrize("dtype,exact", [("bf16", False), ("fp32", True)])
def test_triton_col_compiles_for_sm90_without_a_gpu(dtype, exact):
    """Ahead-of-time compilation to an H100/H200 cubin (ptxas runs; no device needed): the
    kernels the interpreter checks also lower for the real target."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from bone.kernels import triton_kernels as k

    p, i = "*" + dtype, "i32"
    strides = lambda *names: {n: i for n in names}  # noqa: E731
    kernels = [
        (k.col_fwd, {"x_ptr": p, "w_ptr": p, "b_ptr": p, "bias_ptr": p, "y_ptr": p, "T": i, "IN": i,
                     **strides("sxt", "sxi", "swo", "swi", "syt", "syo")}, {"HAS_BIAS": True, "R": 64, "BM": 64, "F32": exact}),
        (k.col_dx, {"g_ptr": p, "w_ptr": p, "b_ptr": p, "dx_ptr": p, "T": i, "OUT": i,
                    **strides("sgt", "sgo", "swo", "swi", "sdt", "sdi")}, {"R": 64, "BM": 64, "F32": exact}),
        (k.col_db, {"g_ptr": p, "x_ptr": p, "w_ptr": p, "part_ptr": "*fp32", "T": i, "IN": i, "OUT": i,
                    **strides("sgt", "sgo", "sxt", "sxi", "swo", "swi")}, {"R": 64, "BT": 64, "SPLIT": 8}),
    ]
    for fn, sig, consts in kernels:
        src = ASTSource(fn=fn, signature={**sig, **{c: "constexpr" for c in consts}}, constexprs=consts)
        assert "cubin" in triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm
