"""bone export --to lora: PEFT loads the folder; shard/mini exact, col/row truncated SVD with true errors."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import bone
from bone.export import get
from bone.export.lora import DEFAULT_MAX_ERROR, serving_note

TARGET = get("lora")
# the tiny Llama (hidden 64, intermediate 128, 2 kv heads of 16): q/o 64x64, k/v 32x64, gate/up 128x64, down 64x128
WIDEST = 64


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    TARGET.add_arguments(parser)
    return parser.parse_args(list(argv))


def export(adapter, out, base, *argv, overwrite=False) -> str:
    lines = []
    TARGET.export(adapter, out, base=base, options=options(*argv), overwrite=overwrite, log=lines.append)
    return "\n".join(lines)


def peft_and_bone_logits(base, adapter, lora):
    from peft import PeftModel

    ids = torch.randint(0, 500, (3, 20), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = bone.load(bone.load_model(base, dtype=torch.float32), adapter).eval()(input_ids=ids).logits
        got = PeftModel.from_pretrained(bone.load_model(base, dtype=torch.float32), lora).eval()(input_ids=ids).logits
    return got, want


def rel_diff(got, want) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def written(lora: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (B, A)} as stored under PEFT's key names."""
    t = load_file(lora / "adapter_model.safetensors")
    names = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in t}
    assert set(t) == {f"base_model.model.{n}.lora_{x}.weight" for n in names for x in "AB"}
    return {n: (t[f"base_model.model.{n}.lora_B.weight"], t[f"base_model.model.{n}.lora_A.weight"]) for n in names}


def true_deltas(model_dir: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """W' - W in float64 from the base files and the adapter blocks (independent of the export)."""
    cfg, blocks, _ = bone.read_adapter(adapter)
    weights = load_file(model_dir / "model.safetensors")
    out = {}
    for name, block in blocks.items():
        w = weights[f"{name}.weight"].double()
        out[name] = bone.merge_weight(w, block.double(), cfg.variant) - w
    return out


def rel_fro(dw, b, a) -> float:
    return (torch.linalg.matrix_norm(dw - b.double() @ a.double()) / torch.linalg.matrix_norm(dw)).item()


def nothing_written(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}*"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import tiny

    return tiny.make_model_dir(tmp_path_factory.mktemp("lora-base"))


@pytest.mark.parametrize("variant, extra", [("shard", {}), ("mini", {"mini_r": 32})])
def test_shard_and_mini_are_exact_lora_in_peft(model_dir, adapter_for, tmp_path, variant, extra):
    adapter = adapter_for(model_dir, tmp_path / "adapter", variant, r=8, **extra)
    log = export(adapter, tmp_path / "lora", model_dir)
    lora = tmp_path / "lora"
    assert sorted(p.name for p in lora.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "export_report.json"]
    cfg = json.loads((lora / "adapter_config.json").read_text())
    _, blocks, _ = bone.read_adapter(adapter)
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 8 and not cfg["use_rslora"]
    assert cfg["target_modules"] == sorted(blocks) and len(blocks) == 14
    v = bone.variants.get(variant)
    for name, (b, a) in written(lora).items():  # B = M^T, A = [I I ...]: the factors themselves, not a fit
        m = v.shard(blocks[name], b.shape[0])
        assert torch.equal(b, m.t()) and torch.equal(a, torch.eye(8).repeat(1, a.shape[1] // 8))
    got, want = peft_and_bone_logits(model_dir, adapter, lora)
    assert rel_diff(got, want) <= 1e-5
    report = json.loads((lora / "export_report.json").read_text())
    assert report["exact"] and report["rank"] == 8 and report["relative_error"]["max"] == 0.0
    assert report["probe"]["relative"] <= 1e-5 and report["probe"]["bone_vs_base"] > 1e-3  # a check that can fail
    assert "probe check: max |logit difference| LoRA (PEFT) vs Bone" in log and "exact" in log
    assert not list(tmp_path.glob(".lora*"))  # no temporary left behind


@pytest.mark.parametrize("variant", ["col", "row"])
def test_col_and_row_at_full_rank_reproduce_the_model(model_dir, adapter_for, tmp_path, variant):
    adapter = adapter_for(model_dir, tmp_path / "adapter", variant)
    export(adapter, tmp_path / "lora", model_dir, "--rank", str(WIDEST))
    report = json.loads((tmp_path / "lora" / "export_report.json").read_text())
    assert not report["exact"] and report["rank"] == WIDEST
    assert report["relative_error"]["max"] < 2e-6  # fp32 SVD and fp32 factors
    narrow = {n: layer for n, layer in report["layers"].items() if min(layer["out"], layer["in"]) < WIDEST}
    assert narrow and all(layer["rank"] == 32 for layer in narrow.values())  # k/v: full rank, zero-padded
    for name, (b, a) in written(tmp_path / "lora").items():
        assert b.shape[1] == a.shape[0] == WIDEST
        if name in narrow:
            assert not b[:, 32:].any() and not a[32:].any()
    got, want = peft_and_bone_logits(model_dir, adapter, tmp_path / "lora")
    assert rel_diff(got, want) <= 1e-5


@pytest.mark.parametrize("variant", ["col", "row"])
def test_reported_errors_are_the_written_factors_true_errors(model_dir, adapter_for, tmp_path, variant):
    adapter = adapter_for(model_dir, tmp_path / "adapter", variant)
    log = export(adapter, tmp_path / "lora", model_dir, "--rank", "4")
    report = json.loads((tmp_path / "lora" / "export_report.json").read_text())
    deltas = true_deltas(model_dir, adapter)
    factors = written(tmp_path / "lora")
    assert set(report["layers"]) == set(deltas) == set(factors)
    for name, dw in deltas.items():
        b, a = factors[name]
        actual = rel_fro(dw, b, a)
        assert report["layers"][name]["relative_error"] == pytest.approx(actual, rel=1e-9)
        s = torch.linalg.svdvals(dw)  # Eckart-Young: the truncated SVD is the best rank-4 factorisation
        assert actual == pytest.approx((s[4:].square().sum() / s.square().sum()).sqrt().item(), rel=1e-4)
        assert actual > 1e-3  # rank 4 < r = 8 really truncates
    got, want = peft_and_bone_logits(model_dir, adapter, tmp_path / "lora")
    assert report["probe"]["max_abs_logit_difference"] > 0 and rel_diff(got, want) > 1e-5
    assert f"max {report['relative_error']['max']:.2e}" in log


def test_default_rank_is_the_smallest_that_holds_the_threshold(model_dir, adapter_for, tmp_path):
    adapter = adapter_for(model_dir, tmp_path / "adapter", "col", std=0.3)
    bound = 0.02
    log = export(adapter, tmp_path / "lora", model_dir, "--max-error", str(bound))
    report = json.loads((tmp_path / "lora" / "export_report.json").read_text())
    k = report["rank"]
    assert 8 < k < WIDEST and f"<= {bound}" in report["rank_rule"] and f"LoRA rank {k}" in log
    deltas = true_deltas(model_dir, adapter)
    for name, (b, a) in written(tmp_path / "lora").items():
        assert rel_fro(deltas[name], b, a) <= bound + 1e-6
    tails = []  # the best rank-(k-1) factorisation misses the bound on some layer
    for dw in deltas.values():
        s = torch.linalg.svdvals(dw)
        tails.append((s[k - 1:].square().sum() / s.square().sum()).sqrt().item())
    assert max(tails) > bound
    export(adapter, tmp_path / "default", model_dir)  # without --max-error: the documented default bound
    report = json.loads((tmp_path / "default" / "export_report.json").read_text())
    assert f"<= {DEFAULT_MAX_ERROR}" in report["rank_rule"] and report["rank"] < k
    assert 0 < report["relative_error"]["max"] <= DEFAULT_MAX_ERROR + 1e-6


def test_default_bound_and_options_parse():
    assert options().max_error == DEFAULT_MAX_ERROR and options().rank is None and options().dtype is None
    with pytest.raises(SystemExit):
        options("--dtype", "int8")
    for argv, match in ((["--rank", "0"], "--rank must be a positive"), (["--max-error", "1.5"], "between 0 and 1")):
        with pytest.raises(ValueError, match=match):
            export(Path("unused"), Path("unused"), None, *argv)


def test_bfloat16_factors_are_written_and_reported_as_approximate(model_dir, adapter_for, tmp_path):
    adapter = adapter_for(model_dir, tmp_path / "adapter", "shard")
    export(adapter, tmp_path / "lora", model_dir, "--dtype", "bfloat16")
    report = json.loads((tmp_path / "lora" / "export_report.json").read_text())
    assert {t.dtype for t in load_file(tmp_path / "lora" / "adapter_model.safetensors").values()} == {torch.bfloat16}
    assert not report["exact"] and 0 < report["relative_error"]["max"] < 1e-2


def test_shard_without_base_uses_the_base_named_in_the_adapter(model_dir, adapter_for, tmp_path):
    adapter = adapter_for(model_dir, tmp_path / "adapter", "shard")
    log = export(adapter, tmp_path / "lora", None)
    assert f"base: {model_dir}" in log and json.loads((tmp_path / "lora" / "export_report.json").read_text())["exact"]
    config = adapter / "adapter_config.json"
    config.write_text(config.read_text().replace(str(model_dir), str(tmp_path / "moved")))
    with pytest.raises(ValueError, match="pass --base"):
        export(adapter, tmp_path / "lora2", None)
    assert nothing_written(tmp_path / "lora2")


def test_conv1d_model_exports_with_fan_in_fan_out(tmp_path, adapter_for):
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=500, n_positions=64, n_embd=64, n_layer=2, n_head=4)).save_pretrained(base)
    adapter = adapter_for(base, tmp_path / "adapter", "shard")
    export(adapter, tmp_path / "lora", base)
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    got, want = peft_and_bone_logits(base, adapter, tmp_path / "lora")
    assert rel_diff(got, want) <= 1e-5


# --- bad input: one clear error, nothing written -------------------------------------------------

@pytest.mark.parametrize("variant", ["col", "row"])
def test_col_and_row_without_base_are_refused(model_dir, adapter_for, tmp_path, variant):
    adapter = adapter_for(model_dir, tmp_path / "adapter", variant)
    with pytest.raises(ValueError, match=f"variant '{variant}' has no exact LoRA form.*pass --base"):
        export(adapter, tmp_path / "lora", None)
    assert nothing_written(tmp_path / "lora")


def test_rank_larger_than_the_layers_is_refused(model_dir, adapter_for, tmp_path):
    col = adapter_for(model_dir, tmp_path / "col", "col")
    with pytest.raises(ValueError, match=r"--rank 65 is larger than every adapted layer allows.*--rank <= 64"):
        export(col, tmp_path / "lora", model_dir, "--rank", "65")
    shard = adapter_for(model_dir, tmp_path / "shard", "shard")
    with pytest.raises(ValueError, match="--rank 9 is larger than the adapter's rank"):
        export(shard, tmp_path / "lora", model_dir, "--rank", "9")
    assert nothing_written(tmp_path / "lora")


def test_shard_at_a_lower_rank_goes_through_the_svd(model_dir, adapter_for, tmp_path):
    adapter = adapter_for(model_dir, tmp_path / "adapter", "shard")
    export(adapter, tmp_path / "lora", model_dir, "--rank", "4")
    report = json.loads((tmp_path / "lora" / "export_report.json").read_text())
    assert report["rank"] == 4 and not report["exact"] and report["relative_error"]["max"] > 1e-3


def test_adapter_of_another_model_is_refused(model_dir, adapter_for, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(other)
    adapter = adapter_for(other, tmp_path / "adapter", "col")
    with pytest.raises(ValueError, match="different base model"):
        export(adapter, tmp_path / "lora", model_dir)
    assert nothing_written(tmp_path / "lora")


def test_rwkv_base_is_refused(model_dir, adapter_for, tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "rwkv"))
    from rwkv_testlib import make_x070

    pth = tmp_path / "tiny.pth"
    torch.save(make_x070(), pth)
    adapter = adapter_for(model_dir, tmp_path / "adapter", "shard")
    with pytest.raises(ValueError, match="not a Hugging Face model.*--to merged"):
        export(adapter, tmp_path / "lora", pth)
    assert nothing_written(tmp_path / "lora")


def test_output_paths(model_dir, adapter_for, tmp_path):
    adapter = adapter_for(model_dir, tmp_path / "adapter", "shard")
    for out in (adapter, adapter / "lora", model_dir / "lora", tmp_path):
        with pytest.raises(ValueError, match="overlaps the input"):
            export(adapter, out, model_dir, overwrite=True)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export(adapter, taken, model_dir)
    assert (taken / "old.txt").exists()
    export(adapter, taken, model_dir, overwrite=True)
    assert not (taken / "old.txt").exists() and (taken / "adapter_model.safetensors").is_file()
    plain = tmp_path / "plain"
    plain.write_text("a file")
    with pytest.raises(FileExistsError, match="is a file"):
        export(adapter, plain, model_dir, overwrite=True)
    assert plain.read_text() == "a file"
    with pytest.raises(FileNotFoundError, match="not a folder"):
        export(tmp_path / "missing", tmp_path / "lora", model_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(adapter, tmp_path / "lora", tmp_path / "no-model")


def test_full_disk_leaves_nothing(model_dir, adapter_for, tmp_path, small_disk):
    adapter = adapter_for(model_dir, tmp_path / "adapter", "shard")
    disk = small_disk(16)  # the factors need ~90 KiB
    with pytest.raises(OSError) as err:
        export(adapter, disk.path / "lora", model_dir)
    assert err.value.errno == 28
    assert list(disk.path.iterdir()) == []


def test_serving_note_names_vllm_ranks_and_warns_above_64():
    assert "--max-lora-rank 16" in serving_note(9) and "above 64" not in serving_note(64)
    assert "--max-lora-rank 128" in serving_note(65) and "above 64" in serving_note(65)
    assert "--max-lora-rank 320" in serving_note(300) and "cannot serve" in serving_note(513)


@pytest.mark.integration
def test_smollm2_shard_export_is_exact(adapter_for, tmp_path):
    from bone.models import resolve

    base = resolve("smollm2-135m")
    adapter = adapter_for(base, tmp_path / "adapter", "shard", r=64, std=0.01)
    log = export(adapter, tmp_path / "lora", "smollm2-135m")
    report = json.loads((tmp_path / "lora" / "export_report.json").read_text())
    assert report["exact"] and report["rank"] == 64 and report["probe"]["relative"] <= 1e-5
    assert "--max-lora-rank 64" in log


def test_an_adapter_with_trained_parts_is_refused(model_dir, tmp_path):
    """A LoRA folder would silently drop base parameters trained in full (LoRA servers load A/B only)."""
    model = bone.apply(bone.load_model(model_dir, dtype=torch.float32),
                       bone.BoneConfig(r=8, variant="shard", train_parts=["norm"]))
    adapter = bone.save(model, tmp_path / "adapter")
    with pytest.raises(ValueError, match="train_parts.*--to merged"):
        export(adapter, tmp_path / "lora", model_dir)
    assert nothing_written(tmp_path / "lora")
