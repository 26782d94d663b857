"""Session fixtures for the training tests: one tiny Llama folder shared by every test."""
from __future__ import annotations


import pytest

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny-llama"))
