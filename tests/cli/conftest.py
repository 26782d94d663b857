"""Fixtures for the command-line tests: one tiny Llama folder, and `bone_cli(*argv)` -> (code, out, err)."""
from __future__ import annotations

import pytest

import tiny  # noqa: E402

from bone.cli import main


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def bone_cli(capsys):
    def call(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


@pytest.fixture(scope="session")
def adapters(model_dir, tmp_path_factory):
    """{"alpha": <runs>/alpha/adapter (col r=8, every projection; named after its run folder),
    "beta": <tmp>/beta (shard r=8 on q_proj and v_proj)} on the tiny Llama of `model_dir`."""
    import bone

    root = tmp_path_factory.mktemp("adapters")
    return {"alpha": tiny.random_adapter(model_dir, root / "runs" / "alpha" / "adapter", bone.BoneConfig(r=8), 1),
            "beta": tiny.random_adapter(model_dir, root / "beta",
                                   bone.BoneConfig(r=8, variant="shard", target_modules=["q_proj", "v_proj"]), 2)}
