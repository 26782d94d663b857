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
