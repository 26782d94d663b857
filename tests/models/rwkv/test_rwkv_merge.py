"""merge_pth: the merged .pth loads in the official runtime and reproduces the adapter model."""
import pytest
import torch

import bone
from bone.models.rwkv import load_rwkv, merge_pth
from rwkv_testlib import VOCAB, make_x060, make_x070, official_logits


def _adapter(pth, out_dir, variant, seed=0, r=16, targets=None):
    model = load_rwkv(pth)
    bone.apply(model, bone.BoneConfig(r=r, variant=variant, target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    for _, layer in bone.bone_layers(model):
        layer.bone_block.data = 0.05 * torch.randn(layer.bone_block.shape, generator=g)
    bone.save(model, out_dir)
    return model.eval()


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["col", "shard"])
def test_merged_checkpoint_matches_adapter_model_in_official_runtime(tiny_pth, version, tmp_path, variant):
    model = _adapter(tiny_pth, tmp_path / "adapter", variant)
    tokens = torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(2)).tolist()
    with torch.no_grad():
        want = model(input_ids=torch.tensor([tokens])).logits[0]
        base = load_rwkv(tiny_pth)(input_ids=torch.tensor([tokens])).logits[0]
    assert (want - base).abs().max() > 1e-2  # the adapter really changes the model
    out = merge_pth(tiny_pth, tmp_path / "adapter", tmp_path / "merged.pth")
    got = official_logits(out, tokens, version)
    assert (got - want).abs().max() <= 1e-4


def test_keys_order_and_dtypes_are_preserved(tmp_path):
    sd = make_x070()
    mixed = {k: (v.bfloat16() if v.dim() == 2 and "weight" in k else v) for k, v in sd.items()}
    torch.save(mixed, tmp_path / "base.pth")
    _adapter(tmp_path / "base.pth", tmp_path / "adapter", "col")
    merge_pth(tmp_path / "base.pth", tmp_path / "adapter", tmp_path / "merged.pth")
    merged = torch.load(tmp_path / "merged.pth", weights_only=True)
    assert list(merged) == list(mixed)
    assert {k: v.dtype for k, v in merged.items()} == {k: v.dtype for k, v in mixed.items()}
    adapted = {f"blocks.{i}.{m}.weight" for i in range(2) for m in
               ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")}
    for k, v in mixed.items():
        assert torch.equal(merged[k], v) != (k in adapted), k
    assert not list(tmp_path.glob(".*tmp"))


def test_refuses_to_overwrite_its_input(tmp_path):
    torch.save(make_x070(), tmp_path / "base.pth")
    _adapter(tmp_path / "base.pth", tmp_path / "adapter", "col")
    before = (tmp_path / "base.pth").read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite"):
        merge_pth(tmp_path / "base.pth", tmp_path / "adapter", tmp_path / "base.pth")
    assert (tmp_path / "base.pth").read_bytes() == before


def test_adapter_of_another_model_is_refused(tmp_path):
    torch.save(make_x070(), tmp_path / "x070.pth")
    torch.save(make_x060(), tmp_path / "x060.pth")
    torch.save(make_x070(C=192), tmp_path / "wide.pth")
    _adapter(tmp_path / "x060.pth", tmp_path / "a6", "col", targets=["receptance"])  # incl. ffn.receptance: x070 lacks it
    with pytest.raises(ValueError, match="ffn.receptance"):
        merge_pth(tmp_path / "x070.pth", tmp_path / "a6", tmp_path / "out.pth")
    _adapter(tmp_path / "wide.pth", tmp_path / "awide", "col")
    with pytest.raises(ValueError, match="does not fit"):
        merge_pth(tmp_path / "x070.pth", tmp_path / "awide", tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_saved_adapter_reloads_and_merges_in_memory(tiny_pth, tmp_path):
    """bone.save / bone.load / bone.merge + unload + save_pth give the same model as merge_pth."""
    from bone.models.rwkv import save_pth

    trained = _adapter(tiny_pth, tmp_path / "adapter", "col")
    ids = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(4))
    fresh = bone.load(load_rwkv(tiny_pth), tmp_path / "adapter").eval()
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        torch.testing.assert_close(fresh(input_ids=ids).logits, want)
    bone.merge(fresh)
    bone.unload(fresh)
    save_pth(fresh, tmp_path / "in_memory.pth")
    merge_pth(tiny_pth, tmp_path / "adapter", tmp_path / "offline.pth")
    a, b = (torch.load(tmp_path / n, weights_only=True) for n in ("in_memory.pth", "offline.pth"))
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)
