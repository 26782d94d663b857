"""Fixtures for the merge tests: a tiny Llama saved in several shards, and a trained-looking adapter."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def sharded_dir(tmp_path_factory):
    """Tiny Llama in ~4 safetensors shards (with an index json) + tokenizer files."""
    return tiny.make_model_dir(tmp_path_factory.mktemp("sharded"), max_shard_size="100KB")


@pytest.fixture(scope="session")
def bf16_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("bf16"), dtype=torch.bfloat16)


def make_adapter(model_dir: Path, out: Path, variant: str = "col", r: int = 8, std: float = 0.05, **cfg) -> Path:
    """A bone.save directory with random (non-zero) blocks on every default target of the model
    (cfg: further BoneConfig fields, e.g. mini_r)."""
    import bone

    model = bone.apply(bone.load_model(model_dir, dtype=torch.float32), bone.BoneConfig(r=r, variant=variant, **cfg))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.copy_(torch.randn(layer.bone_block.shape, generator=g) * std)
    return bone.save(model, out)


@pytest.fixture
def adapter_for():
    return make_adapter
