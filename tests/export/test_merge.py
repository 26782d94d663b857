"""bone merge for Hugging Face folders: streamed, sharded like the input, atomic, checked."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import bone
from bone.export import merge, probe_difference
from bone.models.hf import INDEX


def tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("variant", ["col", "row", "shard"])
def test_merge_keeps_layout_and_matches_adapter_model(sharded_dir, adapter_for, tmp_path, variant):
    adapter = adapter_for(sharded_dir, tmp_path / "adapter", variant)
    lines = []
    out = merge(sharded_dir, adapter, tmp_path / "merged", log=lines.append)
    shards = sorted(p.name for p in sharded_dir.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(p.name for p in out.glob("*.safetensors")) == shards
    assert json.loads((out / INDEX).read_text()) == json.loads((sharded_dir / INDEX).read_text())
    for f in shards:  # every shard holds the same keys, dtypes and shapes as its input
        with safe_open(sharded_dir / f, "pt") as a, safe_open(out / f, "pt") as b:
            assert list(a.keys()) == list(b.keys())
            assert a.metadata() == b.metadata()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (sharded_dir / name).read_bytes()
    cfg, blocks, transposed = bone.read_adapter(adapter)
    base, merged = tensors(sharded_dir), tensors(out)
    want = bone.merge_state_dict(base, cfg, blocks, transposed)
    assert want.keys() == merged.keys() and all(torch.equal(want[k], merged[k]) for k in want)
    assert sum(not torch.equal(base[k], merged[k]) for k in base) == 14  # 7 projections x 2 layers
    diff, scale = probe_difference(sharded_dir, adapter, out)
    assert diff < 1e-4 * (1 + scale)
    assert probe_difference(sharded_dir, adapter, sharded_dir)[0] > 1e-3  # the check sees an unmerged model
    assert any("probe check: max |logit difference|" in ln for ln in lines)
    assert not list(tmp_path.glob(".merged*"))  # no temporary left behind


def test_bf16_base_is_merged_in_fp32_and_cast_once(bf16_dir, adapter_for, tmp_path):
    adapter = adapter_for(bf16_dir, tmp_path / "adapter", "col")
    out = merge(bf16_dir, adapter, tmp_path / "merged", log=lambda s: None)
    merged = tensors(out)
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    cfg, blocks, transposed = bone.read_adapter(adapter)
    want = bone.merge_state_dict(tensors(bf16_dir), cfg, blocks, transposed)
    assert all(torch.equal(want[k], merged[k]) for k in want)


def test_refuses_to_write_over_or_inside_inputs(sharded_dir, adapter_for, tmp_path):
    adapter = adapter_for(sharded_dir, tmp_path / "adapter")
    before = {p.name: p.stat().st_mtime_ns for p in sharded_dir.iterdir()}
    for out in (sharded_dir, sharded_dir / "merged", adapter, tmp_path):
        with pytest.raises(ValueError, match="overlaps the input"):
            merge(sharded_dir, adapter, out, overwrite=True)
    assert {p.name: p.stat().st_mtime_ns for p in sharded_dir.iterdir()} == before
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        merge(sharded_dir, adapter, taken)
    assert (taken / "keep.txt").exists()
    merge(sharded_dir, adapter, taken, overwrite=True, check=False, log=lambda s: None)
    assert not (taken / "keep.txt").exists() and (taken / INDEX).is_file()


def test_adapter_of_another_model_leaves_nothing(sharded_dir, adapter_for, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(other)
    adapter = adapter_for(other, tmp_path / "adapter")
    with pytest.raises(ValueError, match="layers.2"):
        merge(sharded_dir, adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged*"))


def test_missing_inputs_are_clear_errors(sharded_dir, adapter_for, tmp_path):
    adapter = adapter_for(sharded_dir, tmp_path / "adapter")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        merge(tmp_path / "nope", adapter, tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="--adapter .*nope does not exist"):
        merge(sharded_dir, tmp_path / "nope", tmp_path / "m")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt is a file no method reads: pass the adapter folder"):
        merge(sharded_dir, tmp_path / "notes.txt", tmp_path / "m")
    bins = tmp_path / "bin-only"
    bins.mkdir()
    (bins / "config.json").write_text((sharded_dir / "config.json").read_text())
    (bins / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        merge(bins, adapter, tmp_path / "m")
    (tmp_path / "x.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="must end in .pth"):
        merge(tmp_path / "x.pth", adapter, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_nan_adapter_is_refused_even_without_the_check(sharded_dir, adapter_for, tmp_path):
    adapter = adapter_for(sharded_dir, tmp_path / "adapter", "shard")
    from safetensors.torch import save_file

    weights = load_file(adapter / "adapter_model.safetensors")
    key = sorted(weights)[3]
    weights[key][0, 0] = float("nan")
    save_file(weights, adapter / "adapter_model.safetensors")
    for check in (True, False):
        with pytest.raises(ValueError, match="holds NaN or inf"):
            merge(sharded_dir, adapter, tmp_path / "merged", check=check)
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged*"))


def test_a_killed_merge_leaves_temporaries_the_next_merge_removes(sharded_dir, adapter_for, tmp_path):
    import subprocess
    import sys

    adapter = adapter_for(sharded_dir, tmp_path / "adapter")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".merged.tmp-{dead.pid}"
    stale.mkdir()
    (stale / "model-00001-of-00004.safetensors").write_bytes(b"\0" * 1000)
    other = tmp_path / ".keep.tmp-1"
    other.write_text("not ours")
    merge(sharded_dir, adapter, tmp_path / "merged", check=False, log=lambda s: None)
    assert not stale.exists() and other.exists() and (tmp_path / "merged" / INDEX).is_file()


def test_overwrite_does_not_replace_a_file_with_a_folder(sharded_dir, adapter_for, tmp_path):
    adapter = adapter_for(sharded_dir, tmp_path / "adapter")
    out = tmp_path / "merged"
    out.write_text("a plain file")
    with pytest.raises(FileExistsError, match="is a file, but the merged model is a folder"):
        merge(sharded_dir, adapter, out, overwrite=True)
    assert out.read_text() == "a plain file"


def test_full_disk_during_merge_leaves_nothing(sharded_dir, adapter_for, tmp_path, small_disk):
    adapter = adapter_for(sharded_dir, tmp_path / "adapter")
    disk = small_disk(256)  # the tiny model's shards need ~560 KiB
    with pytest.raises(OSError) as err:
        merge(sharded_dir, adapter, disk.path / "merged", check=False, log=lambda s: None)
    assert err.value.errno == 28  # ENOSPC
    assert list(disk.path.iterdir()) == []


@pytest.mark.integration
def test_embedded_model_name_is_a_base(adapter_for, tmp_path):
    from bone.models import resolve

    adapter = adapter_for(resolve("smollm2-135m"), tmp_path / "adapter", "shard", r=64, std=0.01)
    lines = []
    out = merge("smollm2-135m", adapter, tmp_path / "merged", log=lines.append)
    assert (out / "config.json").is_file() and any("probe check" in ln for ln in lines)


def test_trained_parts_are_copied_into_the_merged_folder(bf16_dir, tmp_path):
    """Parts (here the norms and the head, trained in fp32) replace the stored tensors, in the stored dtype."""
    model = bone.apply(bone.load_model(bf16_dir, dtype=torch.float32),
                       bone.BoneConfig(r=8, variant="shard", train_parts=["norm", "lm_head"]))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in bone.trainable_parameters(model):
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    adapter = bone.save(model, tmp_path / "adapter")
    lines = []
    out = merge(bf16_dir, adapter, tmp_path / "merged", log=lines.append)
    assert any("probe check" in ln for ln in lines)
    base, merged, saved = tensors(bf16_dir), tensors(out), bone.read(adapter)
    assert set(saved.parts) == set(bone.parts.names(model)) and len(saved.parts) == 6
    for name, value in saved.parts.items():
        assert merged[name].dtype == torch.bfloat16 and torch.equal(merged[name], value.to(torch.bfloat16))
    want = bone.merge_state_dict(base, saved.cfg, saved.blocks, saved.transposed, parts=saved.parts)
    assert want.keys() == merged.keys() and all(torch.equal(want[k], merged[k]) for k in want)
    assert sum(not torch.equal(base[k], merged[k]) for k in base) == 14 + 6
