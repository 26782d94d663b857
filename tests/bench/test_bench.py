"""bone.bench on a tiny Llama: the CLI end to end, bad arguments, and the 7B memory model
(`scale.py`) against saved-tensor hooks on a small model and against hand-computed numbers."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bone import bench
from bone.bench import measure, setups
from bone.bench.scale import ScaleSpec, kept_per_layer, scale_table
from bone.cli import main as cli_main
from bone.errors import ConfigError, MissingDependencyError

TINY = ["--hidden=64", "--intermediate=128", "--layers=1", "--heads=4", "--vocab=128", "--seq=16", "--batch=2",
        "--r=16", "--mini-r=16", "--lora-r=4", "--threads=1"]


def test_cli_smoke(tmp_path, capsys):
    methods = "frozen,peft-bat,peft-shard,bone-col,bone-shard,bone-col-ref"
    rc = bench.main(TINY + ["--repeats=1", "--warmup=0", "--rss-steps=0", f"--methods={methods}", f"--out={tmp_path}"])
    assert rc == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = data["rows"]
    assert list(rows) == methods.split(",")
    assert rows["frozen"]["step_ratio"] == 1.0 and rows["frozen"]["trainable"] == 0
    assert rows["bone-col"]["trainable"] == rows["peft-bat"]["trainable"] > 0
    assert rows["bone-col"]["extra_kept_bytes"] < min(rows["bone-col-ref"]["extra_kept_bytes"], rows["peft-bat"]["extra_kept_bytes"])
    assert rows["peft-bat"]["about"] == "PEFT MiSS, init_weights='bat' (col)"
    assert data["targets"]["col step / peft-bat step (<= 0.95; --quant <= 0.9)"] == rows["bone-col"]["step_s"] / rows["peft-bat"]["step_s"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| bone-col |" in out and "Flash-Bone col" in out  # result table and the 7B scale table
    assert "issue" not in out.lower()


def test_help_does_not_import_torch():
    probe = ("import contextlib, io, sys\nfrom bone.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n    code = main(['bench', '--help'])\n"
             "print(code, 'torch' in sys.modules, '--suite' in out.getvalue(), '--shape' in out.getvalue())")
    src = Path(__file__).parents[2] / "src"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert r.stdout.split() == ["0", "False", "True", "True"], r.stderr


def test_shape_small_is_the_probe_and_single_fields_override_it():
    args = bench._parser().parse_args(["--shape", "small", "--layers", "2"])
    assert bench._config(args) == setups.BenchConfig(hidden=512, intermediate=1536, layers=2, heads=8, vocab=4096,
                                                     seq=256, batch=2)
    assert bench._config(bench._parser().parse_args([])) == setups.BenchConfig()


def test_keep_suite_reports_both_sides_of_the_trade(tmp_path):
    """Per token count: step ratios for col/shard with and without keep_merged, and the bytes keeping adds
    (the merged weights of the adapted projections; a property of the run, not a timing)."""
    rc = bench.main(TINY + ["--suite=keep", "--tokens=8,512", "--repeats=1", "--warmup=0", f"--out={tmp_path}"])
    assert rc == 0
    data = json.loads((tmp_path / "keep.json").read_text())
    assert list(data) == ["8", "512"] and data["512"]["config"]["batch"] == 2 and data["512"]["config"]["seq"] == 256
    weights = 4 * 64 * 64 + 3 * 64 * 128  # the seven projections of the one tiny layer, in fp32 elements
    for result in data.values():
        rows = result["rows"]
        assert list(rows) == ["frozen", "bone-col", "bone-col-keep", "bone-shard", "bone-shard-keep"]
        for v in ("col", "shard"):
            added = rows[f"bone-{v}-keep"]["extra_kept_bytes"] - rows[f"bone-{v}"]["extra_kept_bytes"]
            assert added == weights * 4, v
    assert "| 512 | bone-col-keep |" in (tmp_path / "keep.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--methods=bone-col"], "must include 'frozen'"),
    (["--methods=frozen,bone-colx"], "'bone-colx'"),
    (["--intermediate=120"], "multiple of r=16"),
    (["--repeats=0"], "--repeats must be >= 1"),
    (["--heads=5"], "divisible by heads=5"),
    (["--suite=keep", "--tokens=64,300"], "multiple of 256"),
    (["--suite=keep", "--tokens=x"], "comma-separated whole numbers"),
    (["--suite=train", "--variants=row"], "choose from"),
    (["--suite=train", "--steps=0"], "--steps must be >= 1"),
    (["--suite=keep", "--methods=frozen"], "--methods applies to --suite step, not keep"),
    (["--suite=train", "--tokens=64"], "--tokens applies to --suite keep, not train"),
    (["--steps=3"], "--steps applies to --suite train, not step"),
    (["--suite=train", "--warmup=1"], "--warmup applies to --suite step / keep, not train"),
    (["--quant=nf4", "--hidden=96", "--heads=4", "--r=16", "--intermediate=192"], "multiples of 64"),
    (["--quant=nf4", "--methods=frozen,peft-bat+flash"], r"\['peft-bat\+flash'\] do not run on a quantized base"),
    (["--quant=int8", "--suite=keep"], "--quant applies to --suite step"),
])
def test_bad_arguments_raise_config_error_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=message):
        step = not any(a.startswith("--suite=") for a in args)  # --rss-steps is the step suite's
        bench.main(TINY + (["--rss-steps=0"] if step else []) + [f"--out={out}", *args])
    assert not out.exists()


def test_flash_setups_run_peft_layers_on_flash_bone(tmp_path):
    """peft-*+flash rows: PEFT MiSS after bone.flash keeps what bone keeps, less than PEFT's own bat."""
    methods = "frozen,peft-bat,peft-bat+flash,bone-col,peft-shard,peft-shard+flash,peft-mini+flash"
    rc = bench.main(TINY + ["--repeats=1", "--warmup=0", "--rss-steps=0", f"--methods={methods}", f"--out={tmp_path}"])
    assert rc == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    rows, extra = data["rows"], {m: r["extra_kept_bytes"] for m, r in data["rows"].items()}
    assert list(rows) == methods.split(",") and rows["peft-bat+flash"]["about"].endswith("+ bone.flash")
    assert extra["peft-bat+flash"] == extra["bone-col"] < extra["peft-bat"]
    assert extra["peft-shard+flash"] <= extra["peft-shard"]
    assert rows["peft-bat+flash"]["trainable"] == rows["peft-bat"]["trainable"] > 0
    ratio = data["targets"]["peft-bat+flash step / peft-bat step (<= 1)"]
    assert ratio == rows["peft-bat+flash"]["step_s"] / rows["peft-bat"]["step_s"]


@pytest.mark.parametrize("quant,bound", [("nf4", 0.4), ("int8", 0.6)])
def test_quant_runs_every_method_on_the_quantized_base(tmp_path, quant, bound):
    """--quant: frozen quantized base, QLoRA, PEFT MiSS shard / bat, bone col / shard, the quantized
    weights' bytes next to bf16 (tiny 64-wide layers: the state is a larger share than at real sizes)."""
    rc = bench.main(TINY + [f"--quant={quant}", "--repeats=1", "--warmup=0", "--rss-steps=0", f"--out={tmp_path}"])
    assert rc == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    rows, wb = data["rows"], data["weight_bytes"]
    assert list(rows) == setups.QUANT_METHODS and data["quant"] == quant
    assert wb["layers"] == 7 and wb["bf16_bytes"] == 2 * (4 * 64 * 64 + 3 * 64 * 128) and wb["ratio"] < bound
    assert rows["bone-col"]["extra_kept_bytes"] < rows["peft-bat"]["extra_kept_bytes"]
    assert all(r["step_s"] > 0 and r["peak_rss_mb"] is None for r in rows.values())
    assert f"vs {wb['bf16_bytes'] / 2**20:.2f} MiB in bf16" in (tmp_path / "bench.md").read_text()


def test_quant_peak_rss_children_rebuild_the_quantized_base(tmp_path):
    """Peak RSS with --quant: a child process per method (~7 s each) rebuilds the quantized model."""
    rc = bench.main(TINY + ["--quant=nf4", "--methods=frozen,bone-col", "--repeats=1", "--warmup=0", "--rss-steps=1",
                            f"--out={tmp_path}"])
    assert rc == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert list(rows) == ["frozen", "bone-col"] and all(r["peak_rss_mb"] > 0 for r in rows.values())


def test_peft_methods_without_peft_name_the_install(tmp_path, monkeypatch):
    """Which methods need PEFT is each setup's `needs_peft`; without PEFT they are refused up front."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"^peft-lora, peft-mini need PEFT \(pip install"):
        bench.main(TINY + ["--rss-steps=0", "--methods=frozen,peft-lora,bone-col,peft-mini", f"--out={tmp_path / 'o'}"])
    assert not (tmp_path / "o").exists()


def test_bad_argument_is_one_line_on_the_command_line(tmp_path, capsys):
    assert cli_main(["bench", *TINY, "--repeats=0", f"--out={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--repeats must be >= 1" in err


def test_every_method_is_built_as_described():
    """Each setup adapts the seven Llama projections (DEFAULT_TARGETS["llama"]) and nothing else, and
    one training step of it moves every trained tensor."""
    cfg = setups.BenchConfig(hidden=64, intermediate=128, layers=1, heads=4, vocab=128, seq=16, batch=2, r=16,
                             mini_r=16, lora_r=4)
    base, ids = setups.build_base(cfg), setups.batch(cfg)
    layer = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    for name in setups.SETUPS:
        model = setups.make(name, base, cfg)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        touched = {t for t in layer if any(f"layers.0.{t}." in n for n in trained)}
        assert touched == (set() if name == "frozen" else set(layer)), name
        assert len(trained) == (0 if name == "frozen" else 14 if name == "peft-lora" else 7), name
        params = setups.trainable(model)
        before = [p.detach().clone() for p in params]
        measure.stepper(model, params, ids)()
        assert all(not torch.equal(a, p) for a, p in zip(before, params)), name


def test_step_uses_the_optimizer_a_training_run_uses():
    """The timed step runs torch's fused AdamW, as `bone train` does by default (same rule,
    `train.optim.fuses`), and the per-tensor loop for parameters the fused one does not take."""
    floats = [torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))]
    assert measure.optimizer(floats).defaults["fused"] is True
    assert measure.optimizer([torch.nn.Parameter(torch.zeros(4, 4, device="meta"))]).defaults["fused"] is None


# scale.py row -> the bench method that runs it
SCALE_METHODS = {"PEFT col (MiSS bat)": "peft-bat", "Flash-Bone col": "bone-col", "Flash-Bone row": "bone-row",
                 "PEFT shard (MiSS)": "peft-shard", "Flash-Bone shard": "bone-shard", "PEFT LoRA r=16": "peft-lora"}


def test_scale_model_matches_saved_tensor_hooks():
    """Every row of `scale.kept_per_layer`, evaluated at a small model's shapes (fp32, one layer),
    equals the extra bytes saved-tensor hooks record for that method over the frozen model."""
    cfg = setups.BenchConfig(hidden=64, intermediate=128, layers=1, heads=4, vocab=128, seq=16, batch=2, r=16,
                             mini_r=16, lora_r=16)
    base, ids = setups.build_base(cfg), setups.batch(cfg)
    kept = {m: measure.kept_bytes(setups.make(m, base, cfg), ids) for m in ["frozen", *SCALE_METHODS.values()]}
    model = kept_per_layer(ScaleSpec(hidden=64, intermediate=128, layers=1, r=16, bytes_per=4, tokens=32))
    assert set(model) == set(SCALE_METHODS)
    for row, method in SCALE_METHODS.items():
        assert kept[method] - kept["frozen"] == sum(model[row].values()), row


def test_scale_table_llama2_7b_by_hand():
    """LLaMA2-7B (h 4096, i 11008, 32 layers), r=64, bf16, 32768 tokens, worked out by hand:
    weights per layer 4*4096^2 + 3*4096*11008 = 202,375,168 -> two copies 809,500,672 B (24.125 GiB
    over 32 layers); inputs (2*4096 + 11008) * 32768 * 2 B = 1.171875 GiB per layer (37.5 GiB);
    T x r: 7 * 32768 * 64 * 2 B = 28 MiB per layer (0.875 GiB)."""
    lines = scale_table(ScaleSpec()).splitlines()
    assert lines[4:] == [
        "| PEFT col (MiSS bat) | 24.1 | 37.5 | 0.00 | 61.6 | 1.93 |",
        "| Flash-Bone col | 0.0 | 37.5 | 0.00 | 37.5 | 1.17 |",
        "| Flash-Bone row | 0.0 | 37.5 | 0.00 | 37.5 | 1.17 |",
        "| PEFT shard (MiSS) | 0.0 | 0.0 | 0.88 | 0.9 | 0.03 |",
        "| Flash-Bone shard | 0.0 | 0.0 | 0.88 | 0.9 | 0.03 |",
        "| PEFT LoRA r=64 | 0.0 | 37.5 | 0.88 | 38.4 | 1.20 |",
    ]


@pytest.mark.integration
def test_peak_rss_child():
    rss = measure.child_peak_rss("bone-shard", TINY + ["--rss-steps=1"])
    assert 50 < rss < 16_000


@pytest.mark.integration
def test_train_suite_runs_both_trainers_on_the_same_batches(tmp_path):
    """One step of bone train and of transformers.Trainer + PEFT on the demo data (the embedded SmolLM2)."""
    rc = bench.main(["--suite=train", "--variants=shard", "--steps=1", "--repeats=1", "--threads=1", f"--out={tmp_path}"])
    assert rc == 0
    rows = json.loads((tmp_path / "train.json").read_text())["rows"]
    assert set(rows) == {"bone shard", "bone shard, keep_merged=auto", "Trainer + PEFT shard"}
    assert all(r["step_s"] > 0 for r in rows.values())


@pytest.mark.integration
def test_train_suite_trainer_side_saves_what_bone_saves(tmp_path):
    """The timed Trainer run writes a checkpoint at its last step and the final adapter, as bone train does."""
    from bone.bench import e2e

    out = tmp_path / "run"
    wall, cpu = e2e.run_hf(e2e.bone_config("shard", 1, out), out)
    assert wall > 0 and cpu > 0
    assert (out / "checkpoint-1" / "optimizer.pt").is_file()
    assert (out / "final" / "adapter_model.safetensors").is_file()
