"""RWKV-PEFT checkpoints through bone: `bone merge` of an RWKV-PEFT `.pth` equals RWKV-PEFT's own merge
(its formula, MATH.md, re-implemented here independently of bone), key for key, on tiny x060 / x070
checkpoints in fp32 and bf16; `bone export --to rwkv-peft` gives the same file back; the exported
file loads into an RWKV-PEFT-shaped model with no unexpected key; the official runtime runs the merge."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import bone
from bone.cli import main
from bone.models.rwkv import load_rwkv
from rwkv_testlib import MAKERS, VOCAB, official_logits

PARTS = {"x060": ("time", "ln"), "x070": ("ln",)}  # RWKV-PEFT's default --train_parts time ln (x070 has no time_*)
CASES = [("shard", 48), ("shard", 64), ("row", 32)]  # r=48 divides no layer's `in` (128, 448, 512): ragged last slices


# --- RWKV-PEFT's merge, from MATH.md (merge_disha.py's arithmetic: the tensors' own dtype) -------
def fold_shard(w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """W'[o, j*r + i] = W[o, j*r + i] + M[i, o]; the last, partial slice uses the first in % r rows of M."""
    r, out = m.shape[0], w.clone()
    for start in range(0, w.shape[1], r):
        width = min(r, w.shape[1] - start)
        out[:, start:start + width] = w[:, start:start + width] + m[:width].t()
    return out


def fold_row(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """W'[a, b] = W[a, b] + (W[a, b] @ D[b] + D[b]) for every r x r block."""
    r, out = d.shape[-1], w.clone()
    for a in range(w.shape[0] // r):
        for b in range(w.shape[1] // r):
            blk = w[a * r:(a + 1) * r, b * r:(b + 1) * r]
            out[a * r:(a + 1) * r, b * r:(b + 1) * r] = blk + (blk @ d[b] + d[b])
    return out


def rwkv_peft_merge(base: dict, peft: dict) -> dict:
    """The file's tensors replace the base's; each `<module>.disha` folds into `<module>.weight`;
    every other key is kept, in the base's order; the blocks themselves are not written."""
    w = {**base, **peft}
    out = {}
    for key in base:
        block = w.get(key[: -len(".weight")] + ".disha") if key.endswith(".weight") else None
        t = w[key] if block is None else (fold_shard if block.dim() == 2 else fold_row)(w[key], block)
        out[key] = t.clone()
    return out


def rwkv_peft_file(base: dict, version: str, variant: str, r: int, dtype: torch.dtype, seed: int = 0) -> dict:
    """What an RWKV-PEFT run saves: a block on every projection of its linear factory (bone's default
    targets) and the trained --train_parts tensors (here: the base's, moved a little)."""
    g = torch.Generator().manual_seed(seed)
    model = load_rwkv_from(base)
    sd = {}
    for name in bone.inject.default_target_names(model):
        out, in_ = base[f"{name}.weight"].shape
        shape = (r, out) if variant == "shard" else (in_ // r, r, r)
        sd[f"{name}.disha"] = (0.05 * torch.randn(shape, generator=g)).to(dtype)
    for key, t in base.items():
        if any(p in key for p in PARTS[version]):
            sd[key] = (t.float() + 0.05 * torch.randn(t.shape, generator=g)).to(dtype)
    return sd


def load_rwkv_from(sd: dict):
    from bone.models.rwkv.checkpoint import RWKVForCausalLM, config_from_state_dict

    with torch.device("meta"):
        return RWKVForCausalLM(config_from_state_dict(sd))


def write(tmp_path, version, variant, r, dtype):
    base = {k: v.to(dtype) for k, v in MAKERS[version]().items()}
    peft = rwkv_peft_file(base, version, variant, r, dtype)
    torch.save(base, tmp_path / "base.pth")
    torch.save(peft, tmp_path / "rwkv-0.pth")
    return base, peft


def bf16_ulp(t: torch.Tensor) -> torch.Tensor:
    return torch.ldexp(torch.ones_like(t, dtype=torch.float32), torch.frexp(t.float().abs()).exponent - 8)


@pytest.mark.parametrize("variant, r", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("version", ["x060", "x070"])
def test_bone_merge_equals_rwkv_peft_merge(version, dtype, variant, r, tmp_path, capsys):
    base, peft = write(tmp_path, version, variant, r, dtype)
    assert main(["merge", "--base", str(tmp_path / "base.pth"), "--adapter", str(tmp_path / "rwkv-0.pth"),
                 "--out", str(tmp_path / "merged.pth")]) == 0
    assert "probe check" in capsys.readouterr().out
    got, want = torch.load(tmp_path / "merged.pth", weights_only=True), rwkv_peft_merge(base, peft)
    assert list(got) == list(want) and all(got[k].dtype == want[k].dtype == dtype for k in want)
    folded = {k for k in want if k[: -len(".weight")] + ".disha" in peft}
    parts = {k for k in peft if not k.endswith(".disha")}
    assert len(folded) == {"x060": 16, "x070": 12}[version] and parts and not folded & parts
    for k in want:  # bit for bit: copies, the shard fold (one addition) and, in fp32, the row fold (same order)
        if k not in folded or variant == "shard" or dtype == torch.float32:
            assert torch.equal(got[k], want[k]), k
    rows = sorted(folded) if variant == "row" and dtype == torch.bfloat16 else []
    exact = {k: fold_row(base[k].double(), peft[k[: -len(".weight")] + ".disha"].double()) for k in rows}
    for k in rows:  # W + (W D + D): bone computes in fp32 and rounds once, RWKV-PEFT rounds each step in bf16
        diff = (got[k].double() - want[k].double()).abs()
        # within RWKV-PEFT's three bf16 roundings (of W D, of W D + D, of the sum) and bone's one
        d = peft[k[: -len(".weight")] + ".disha"].double()
        t = exact[k] - base[k].double()  # W D + D
        wd = t - fold_row(torch.zeros_like(t), d)  # W D
        assert (diff <= bf16_ulp(wd) + bf16_ulp(t) + 2 * bf16_ulp(exact[k])).all(), k
    if rows:  # and bone's rounding is the closer one to the exact fold
        err = lambda d: sum((d[k].double() - exact[k]).abs().sum().item() for k in rows)  # noqa: E731
        print(f"{version} row bf16: total |error| vs fp64 fold: bone {err(got):.4g}, RWKV-PEFT {err(want):.4g}")
        assert err(got) <= err(want)


@pytest.mark.parametrize("variant, r", [("shard", 48), ("row", 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("version", ["x060", "x070"])
def test_load_save_export_gives_the_same_file_back(version, dtype, variant, r, tmp_path, capsys):
    base, peft = write(tmp_path, version, variant, r, dtype)
    model = bone.load(load_rwkv(tmp_path / "base.pth", dtype=torch.float32), tmp_path / "rwkv-0.pth")
    assert (bone.adapter_config(model).variant, bone.adapter_config(model).r) == (variant, r)
    bone.save(model, tmp_path / "adapter")
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    assert main(["export", "--to", "rwkv-peft", "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "back.pth"),
                 "--dtype", name]) == 0
    assert "RWKV-PEFT mode" in capsys.readouterr().out
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert set(back) == set(peft) and all(back[k].dtype == dtype and torch.equal(back[k], peft[k]) for k in peft)

    # RWKV-PEFT's --disha_config load: load_state_dict(strict=False) into its model (weight + disha per projection)
    rp = load_rwkv(tmp_path / "base.pth", dtype=dtype)
    for target in bone.inject.default_target_names(rp):
        layer = rp.get_submodule(target)
        layer.disha = nn.Parameter(torch.zeros(peft[f"{target}.disha"].shape, dtype=dtype))
    result = rp.load_state_dict(back, strict=False)
    assert result.unexpected_keys == [] and all(torch.equal(rp.get_parameter(k), v) for k, v in back.items())


def test_export_refuses_variants_rwkv_peft_lacks_and_writes_nothing(tmp_path, capsys):
    torch.save(MAKERS["x070"](), tmp_path / "base.pth")
    model = bone.apply(load_rwkv(tmp_path / "base.pth"), bone.BoneConfig(r=16, variant="col"))
    bone.save(model, tmp_path / "col")
    assert main(["export", "--to", "rwkv-peft", "--adapter", str(tmp_path / "col"), "--out", str(tmp_path / "x.pth")]) == 1
    err = capsys.readouterr().err
    assert "variant 'col' has no RWKV-PEFT form" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pth").exists() and not list(tmp_path.glob(".x.pth*"))


def test_export_refuses_an_adapter_of_another_architecture(make_llama, tmp_path, capsys):
    """A Llama shard adapter has an RWKV-PEFT mode but no RWKV layers: refused, nothing written."""
    bone.save(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="shard")), tmp_path / "llama")
    assert main(["export", "--to", "rwkv-peft", "--adapter", str(tmp_path / "llama"), "--out", str(tmp_path / "x.pth")]) == 1
    err = capsys.readouterr().err
    assert "the adapter's layers are not an RWKV model's (14, e.g. model.layers.0.mlp.down_proj" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.pth").exists()


@pytest.mark.integration
@pytest.mark.parametrize("version", ["x060", "x070"])
def test_merged_rwkv_peft_file_runs_in_the_official_runtime(version, tmp_path):
    write(tmp_path, version, "shard", 48, torch.float32)
    tokens = torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(5)).tolist()
    adapted = bone.load(load_rwkv(tmp_path / "base.pth"), tmp_path / "rwkv-0.pth").eval()
    with torch.no_grad():
        want = adapted(input_ids=torch.tensor([tokens])).logits[0]
    assert main(["merge", "--base", str(tmp_path / "base.pth"), "--adapter", str(tmp_path / "rwkv-0.pth"),
                 "--out", str(tmp_path / "merged.pth")]) == 0
    got = official_logits(tmp_path / "merged.pth", tokens, version)
    assert (got - want).abs().max() <= 1e-4
