"""QBone through the command line: `bone train model.quantize=...` (evaluating before and after, the
bitsandbytes repack trap), then `bone eval --quantize`, and `bone merge` into the full-precision base
or into the dequantized weights (both print the cost of the choice)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tiny  # noqa: E402

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def quant_run(tmp_path_factory, model_dir):
    from bone.cli import main

    run = tmp_path_factory.mktemp("qrun") / "run"
    args = tiny.overrides(model_dir, run, **{"model.quantize": "nf4", "data.eval": "bundled:arith", "data.eval_limit": 4,
                                             "eval.before": True, "eval.after": True, "eval.max_new_tokens": 6,
                                             "schedule.max_steps": 4})
    assert main(["train", *map(str, args)]) == 0
    return run


def test_training_on_nf4_writes_an_ordinary_trained_adapter(quant_run):
    blocks = load_file(quant_run / "adapter" / "adapter_model.safetensors")
    assert len(blocks) == 14 and all(b.dtype == torch.float32 and b.abs().max() > 0 for b in blocks.values())
    assert json.loads((quant_run / "eval" / "after" / "results.json").read_text())["n"] == 4
    losses = [json.loads(ln)["loss"] for ln in (quant_run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_eval_runs_the_adapter_on_a_quantized_and_a_full_precision_base(quant_run, model_dir, tmp_path, bone_cli):
    for extra in (["--quantize", "nf4"], []):
        out = tmp_path / ("q" if extra else "fp")
        code, _, err = bone_cli("eval", "--model", model_dir, "--adapter", quant_run / "adapter", "--data",
                                "bundled:arith", "--limit", 3, "--metric", "loss", "--out", out, *extra)
        assert code == 0, err
        assert json.loads((out / "results.json").read_text())["tokens"] > 0
    code, _, err = bone_cli("eval", "--model", model_dir, "--data", "bundled:arith", "--out", tmp_path / "x",
                            "--compute-dtype", "bfloat16")
    assert code == 1 and "--compute-dtype applies to a quantized base" in err


@pytest.mark.parametrize("dequantized", [False, True])
def test_merge_reports_the_cost_of_each_choice(quant_run, model_dir, tmp_path, bone_cli, dequantized):
    out = tmp_path / "merged"
    code, text, err = bone_cli("merge", "--base", model_dir, "--adapter", quant_run / "adapter", "--out", out,
                               "--quantize", "nf4", *(["--dequantized"] if dequantized else []))
    assert code == 0, err
    assert (out / "config.json").is_file()
    what = "nf4-dequantized base+adapter" if dequantized else "vs base+adapter"
    assert what in text and "merged vs nf4 base+adapter (as trained" in text


def test_bad_quantization_options_are_one_line(model_dir, tmp_path, bone_cli):
    cases = [(["model.quantize=nf5"], "model.quantize='nf5' is not a quantization"),
             (["model.quant_compute_dtype=bfloat16"], "applies to a quantized base only")]
    for extra, message in cases:
        code, _, err = bone_cli("train", *map(str, tiny.overrides(model_dir, tmp_path / "r")), *extra)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = bone_cli("merge", "--base", model_dir, "--adapter", tmp_path, "--out", tmp_path / "m", "--dequantized")
    assert code == 1 and "needs the quantization the adapter was trained with" in err


def test_the_command_does_not_print_bitsandbytes_optional_kernel_warning(model_dir, tmp_path):
    """On CPUs with AVX512-BF16 (as CI's), importing bitsandbytes logs that an optional Hub kernel
    could not be fetched; the command hides that line (bone.cli.QUIET_LOGGERS), so a quantized run
    prints only its own output."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    r = subprocess.run([sys.executable, "-m", "bone", "eval", "--model", str(model_dir), "--data", "bundled:arith",
                        "--limit", "1", "--metric", "loss", "--quantize", "nf4", "--out", str(tmp_path / "e")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "kernels-community" not in r.stderr and "gemm_4bit_forward" not in r.stderr
