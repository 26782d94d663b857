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
    """forward_fn uses the torch ColFn for CPU tensors (and for r the kernels do not tile)."""
    x, w, blk = torch.zeros(2, 32), torch.zeros(32, 32), torch.zeros(2, 16, 16)
    assert not triton_col.usable(x, w, blk)
    assert not triton_col.usable(x, w, torch.zeros(4, 8, 8))
