"""RWKV-PEFT's `.pth` checkpoints (bone.rwkv_peft): variant and r from the block shapes, the other
tensors as trained parts, every malformed file refused in one line with nothing changed, and
`state_dict` (what `bone export --to rwkv-peft` writes) read back to the same tensors."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import bone
from bone import rwkv_peft
from bone.errors import AdapterError
from bone.methods import owner

sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "rwkv"))
from rwkv_testlib import make_x060  # noqa: E402

C, F = 128, 448  # make_x060 widths: att C -> C, ffn.key C -> F, ffn.value F -> C


def peft_file(tmp_path, blocks: dict, parts: dict | None = None, name="rwkv-0.pth") -> Path:
    path = tmp_path / name
    torch.save({**(parts or {}), **blocks}, path)
    return path


def test_shapes_give_the_variant_and_r(tmp_path):
    shard = peft_file(tmp_path, {"blocks.0.att.key.disha": torch.zeros(32, C), "blocks.0.ffn.value.disha": torch.zeros(32, C)},
                      {"blocks.0.ln1.weight": torch.ones(C), "blocks.0.att.time_maa_x": torch.zeros(1, 1, C)})
    cfg, blocks, parts = rwkv_peft.read(shard)
    assert (cfg.variant, cfg.r, cfg.target_modules) == ("shard", 32, ["blocks.0.att.key", "blocks.0.ffn.value"])
    assert set(blocks) == {"blocks.0.att.key", "blocks.0.ffn.value"} and set(parts) == {"blocks.0.ln1.weight", "blocks.0.att.time_maa_x"}
    row = peft_file(tmp_path, {"blocks.1.ffn.value.bone": torch.zeros(F // 64, 64, 64)}, name="old.pth")  # 2024-11 keys
    cfg, blocks, parts = rwkv_peft.read(row)
    assert (cfg.variant, cfg.r, list(blocks), parts) == ("row", 64, ["blocks.1.ffn.value"], {})
    assert owner(shard).name == "bone" and owner(row).name == "bone"


@pytest.mark.parametrize("content, message", [
    ({"blocks.0.att.key.disha": torch.zeros(8, C), "blocks.0.att.value.bone": torch.zeros(8, C)}, "mixes '.disha' and '.bone'"),
    ({"blocks.0.att.key.disha": torch.zeros(2, 8, 4)}, r"blocks.0.att.key \(2, 8, 4\)'\] fit neither RWKV-PEFT mode"),
    ({"blocks.0.att.key.disha": torch.zeros(C)}, "fit neither RWKV-PEFT mode"),
    ({"blocks.0.att.key.disha": torch.zeros(8, C), "blocks.0.att.value.disha": torch.zeros(2, 64, 64)}, "mixes block kinds"),
    ({"blocks.0.att.key.disha": torch.zeros(8, C), "blocks.0.att.value.disha": torch.zeros(16, C)}, "mixes block kinds"),
    ({"blocks.0.att.key.disha": torch.zeros(8, C), "blocks.0.att.key.weight": torch.zeros(C, C)}, "both the block and the weight"),
    ({"blocks.0.att.key.disha": torch.full((8, C), float("nan"))}, "NaN or inf"),
    ({"blocks.0.att.key.lora_A": torch.zeros(8, C)}, "holds no '<module>.disha'"),
    (make_x060(), "is a full RWKV model"),
])
def test_malformed_files_are_refused(tmp_path, content, message):
    with pytest.raises(AdapterError, match=message):
        rwkv_peft.read(peft_file(tmp_path, content))


def test_files_that_are_not_tensor_dicts_are_refused(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(AdapterError, match="not a readable torch file"):
        rwkv_peft.read(tmp_path / "junk.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(AdapterError, match="not a dict of tensors"):
        rwkv_peft.read(tmp_path / "list.pth")


def test_a_refused_file_leaves_the_model_unchanged(tmp_path):
    from bone.models.rwkv import load_rwkv

    torch.save(make_x060(), tmp_path / "base.pth")
    model = load_rwkv(tmp_path / "base.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for content in ({"blocks.0.att.key.disha": torch.zeros(8, 100)},  # out=100: not this model's layer
                    {"blocks.0.att.key.disha": torch.zeros(8, C), "blocks.0.ln1.weight": torch.ones(7)}):
        with pytest.raises(AdapterError, match="different base model"):
            bone.load(model, peft_file(tmp_path, content))
    assert not list(bone.bone_layers(model)) and bone.parts.names(model) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("variant, r, shapes", [("shard", 16, [(16, C), (16, F)]), ("row", 32, [(C // 32, 32, 32), (F // 32, 32, 32)])])
def test_state_dict_reads_back_to_the_same_adapter(variant, r, shapes, tmp_path):
    g = torch.Generator().manual_seed(0)
    blocks = {m: torch.randn(s, generator=g) for m, s in zip(["blocks.10.att.key", "blocks.2.ffn.key"], shapes)}
    parts = {"blocks.2.ln1.weight": torch.randn(C, generator=g)}
    cfg = bone.BoneConfig(r=r, variant=variant)
    sd = rwkv_peft.state_dict(cfg, blocks, parts, torch.bfloat16)
    assert list(sd) == ["blocks.2.ffn.key.disha", "blocks.2.ln1.weight", "blocks.10.att.key.disha"]  # natural order
    assert all(t.dtype == torch.bfloat16 for t in sd.values())
    torch.save(sd, tmp_path / "x.pth")
    cfg2, blocks2, parts2 = rwkv_peft.read(tmp_path / "x.pth")
    assert (cfg2.variant, cfg2.r) == (variant, r)
    assert all(torch.equal(blocks2[m], blocks[m].bfloat16()) for m in blocks) and torch.equal(parts2["blocks.2.ln1.weight"], parts["blocks.2.ln1.weight"].bfloat16())


@pytest.mark.parametrize("variant", ["col", "mini"])
def test_variants_without_an_rwkv_peft_form_are_refused(variant):
    cfg = bone.BoneConfig(r=8, variant=variant, mini_r=8 if variant == "mini" else None)
    with pytest.raises(AdapterError, match=f"variant '{variant}' has no RWKV-PEFT form") as err:
        rwkv_peft.state_dict(cfg, {"a": torch.zeros(1, 8, 8)}, {}, torch.float32)
    assert "'bone' (bone shard)" in str(err.value) and "'bat' (bone row)" in str(err.value)
