"""Session fixtures: one tiny Llama folder (2 layers, hidden 64) shared by every test here."""
from __future__ import annotations

import pytest

import tiny


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny-llama"))
