"""Loading and writing BlinkDL .pth files: layout, sizes, round trip and every error path."""
import argparse

import pytest
import torch

import bone
from bone.models import load_model
from bone.models.rwkv import load_rwkv, save_pth
from rwkv_testlib import MAKERS, VOCAB, make_x070


def test_state_dict_keys_are_the_checkpoint_keys(tiny_pth, version):
    sd = torch.load(tiny_pth, weights_only=True)
    model = load_model(tiny_pth)  # the project's single entry point dispatches .pth here
    assert list(model.state_dict()) == list(sd)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    cfg = model.config
    assert cfg.model_type == {"x070": "rwkv7", "x060": "rwkv6"}[version]
    assert (cfg.n_layer, cfg.n_embd, cfg.head_size, cfg.n_head, cfg.vocab_size) == (2, 128, 64, 2, VOCAB)
    assert cfg.dim_ffn == (512 if version == "x070" else 448)
    if version == "x070":
        assert (cfg.decay_lora, cfg.aaa_lora, cfg.mv_lora, cfg.gate_lora) == (32, 16, 8, 24)
    else:
        assert (cfg.mix_lora, cfg.decay_lora) == (16, 24)
    for name in ("receptance", "key", "value", "output"):
        assert type(model.get_submodule(f"blocks.1.att.{name}")) is torch.nn.Linear


def test_low_rank_pairs_are_parameters_not_linears(tiny_pth, version):
    model = load_rwkv(tiny_pth)
    att = model.blocks[1].att
    names = ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2") if version == "x070" else \
        ("time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2")
    assert all(isinstance(getattr(att, n), torch.nn.Parameter) for n in names)


def test_bf16_checkpoint_and_dtype_argument(tmp_path):
    path = tmp_path / "bf16.pth"
    torch.save({k: v.bfloat16() for k, v in make_x070().items()}, path)
    assert load_rwkv(path).dtype == torch.float32
    model = load_rwkv(path, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="not a torch dtype"):
        load_rwkv(path, dtype="bf17")
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.dtype == torch.bfloat16


def test_layer0_without_value_residual_params(tmp_path):
    path = tmp_path / "nov.pth"
    torch.save(make_x070(layer0_v=False), path)
    model = load_rwkv(path)
    assert not model.config.layer0_v_params and "blocks.0.att.v0" not in model.state_dict()


def test_save_pth_round_trip(tiny_pth, tmp_path):
    model = load_rwkv(tiny_pth)
    out = save_pth(model, tmp_path / "copy.pth", dtype=torch.bfloat16)
    sd, back = torch.load(tiny_pth, weights_only=True), torch.load(out, weights_only=True)
    assert list(back) == list(sd) and all(t.dtype == torch.bfloat16 for t in back.values())
    torch.testing.assert_close(back["head.weight"], sd["head.weight"].bfloat16())
    assert not list(tmp_path.glob(".*tmp"))
    bone.apply(model, bone.BoneConfig(r=16))
    with pytest.raises(ValueError, match="Bone adapter"):
        save_pth(model, tmp_path / "adapted.pth")
    assert not (tmp_path / "adapted.pth").exists()


def _write(tmp_path, obj, name="bad.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_errors_name_the_problem(tmp_path):
    sd = make_x070()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rwkv(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_rwkv(tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="not an RWKV checkpoint"):
        load_rwkv(_write(tmp_path, {"model.embed_tokens.weight": torch.zeros(2, 2)}))
    with pytest.raises(ValueError, match="not a dict of tensors"):
        load_rwkv(_write(tmp_path, [torch.zeros(2)]))
    with pytest.raises(ValueError, match="non-tensor entries"):
        load_rwkv(_write(tmp_path, {**sd, "_strategy": "cpu fp32"}))
    old = {k: v for k, v in sd.items() if ".att.r_k" not in k}
    with pytest.raises(ValueError, match="unknown version"):
        load_rwkv(_write(tmp_path, old))
    v4 = {"emb.weight": sd["emb.weight"], "blocks.0.att.key.weight": torch.zeros(2, 2), "blocks.0.att.time_mix_k": torch.zeros(2)}
    with pytest.raises(ValueError, match="RWKV-4/5"):
        load_rwkv(_write(tmp_path, v4))
    missing = {k: v for k, v in sd.items() if k not in ("blocks.1.att.k_a", "blocks.1.ffn.value.weight")}
    with pytest.raises(ValueError, match=r"missing keys \(2\).*blocks\.1\.att\.k_a.*blocks\.1\.ffn\.value\.weight"):
        load_rwkv(_write(tmp_path, missing))
    with pytest.raises(ValueError, match="unexpected keys.*blocks.0.att.time_state"):
        load_rwkv(_write(tmp_path, {**sd, "blocks.0.att.time_state": torch.zeros(2, 64, 64)}))
    wrong = {**sd, "blocks.1.att.w2": torch.zeros(7, 128)}
    with pytest.raises(ValueError, match=r"blocks\.1\.att\.w2: \(7, 128\) \(expected \(32, 128\)\)"):
        load_rwkv(_write(tmp_path, wrong))


def test_pickled_objects_are_refused(tmp_path):
    """A training checkpoint that also pickles its argparse namespace is not loaded (weights_only)."""
    path = _write(tmp_path, {**make_x070(), "args": argparse.Namespace(lr=1e-4)})
    with pytest.raises(ValueError, match="other than plain tensors"):
        load_rwkv(path)


@pytest.mark.parametrize("version_", list(MAKERS))
def test_sizes_follow_the_file(tmp_path, version_):
    path = tmp_path / "wide.pth"
    torch.save(MAKERS[version_](n_layer=3, C=192, N=32, vocab=300), path)
    cfg = load_rwkv(path).config
    assert (cfg.n_layer, cfg.n_embd, cfg.head_size, cfg.n_head, cfg.vocab_size) == (3, 192, 32, 6, 300)
