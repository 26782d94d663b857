"""`bone export --to TARGET` and `bone merge` (the merged target under its familiar name)."""
from __future__ import annotations

import pytest
import torch

import bone
from bone.export import TARGETS


@pytest.fixture(scope="module")
def adapter(model_dir, tmp_path_factory):
    """A bone.save folder with random (trained-looking) blocks on the tiny Llama's default targets."""
    model = bone.apply(bone.load_model(model_dir, dtype=torch.float32), bone.BoneConfig(r=8))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.copy_(torch.randn(layer.bone_block.shape, generator=g) * 0.05)
    return bone.save(model, tmp_path_factory.mktemp("adapter") / "adapter")


def _logits(path, ids):
    with torch.no_grad():
        return bone.load_model(path, dtype=torch.float32).eval()(input_ids=ids).logits


def test_export_to_merged_equals_bone_merge(bone_cli, model_dir, adapter, tmp_path):
    a, b = tmp_path / "exported", tmp_path / "merged"
    code, out, _ = bone_cli("export", "--to", "merged", "--base", model_dir, "--adapter", adapter, "--out", a)
    assert code == 0 and "probe check" in out and f"wrote {a}" in out
    code, out, _ = bone_cli("merge", "--base", model_dir, "--adapter", adapter, "--out", b, "--no-check")
    assert code == 0 and "probe check" not in out
    ids = torch.arange(5, 21).reshape(2, 8)
    base = bone.load(bone.load_model(model_dir, dtype=torch.float32), adapter).eval()
    with torch.no_grad():
        want = base(input_ids=ids).logits
    assert torch.equal(_logits(a, ids), _logits(b, ids))
    assert torch.allclose(_logits(a, ids), want, atol=1e-4)


def test_export_help_lists_targets_and_the_chosen_targets_options(bone_cli):
    code, out, _ = bone_cli("export", "--help")
    assert code == 0 and all(f"  {name} " in out for name in TARGETS) and "--no-check" not in out
    code, out, _ = bone_cli("export", "--to", "merged", "--help")
    assert code == 0 and "options of --to merged:" in out and "--no-check" in out


def test_export_refuses_what_it_cannot_do_and_writes_nothing(bone_cli, model_dir, adapter, tmp_path):
    code, _, err = bone_cli("export", "--to", "merged", "--adapter", adapter, "--out", tmp_path / "o")
    assert code == 2 and "--to merged needs --base" in err
    code, _, err = bone_cli("merge", "--base", "nowhere", "--adapter", "nowhere", "--out", tmp_path / "o")
    assert code == 1 and "--base nowhere does not exist" in err
    (tmp_path / "taken").mkdir()
    code, _, err = bone_cli("export", "--to", "merged", "--base", model_dir, "--adapter", adapter, "--out", tmp_path / "taken")
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and not any((tmp_path / "taken").iterdir())
