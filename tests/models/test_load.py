"""bone.load_model / load_tokenizer: missing local paths are missing paths, never bad Hub names."""
from __future__ import annotations

import pytest

from bone.errors import MissingPathError
from bone.models import load_model, load_tokenizer


@pytest.mark.parametrize("load", [load_model, load_tokenizer])
@pytest.mark.parametrize("path", ["/nonexistent", "relative/missing/folder", "missing-folder"])
def test_missing_local_paths_are_reported_as_missing(load, path):
    with pytest.raises(MissingPathError, match=f"'{path}' not found") as err:
        load(path)
    assert "Repo id" not in str(err.value)
    assert ("read from the model's folder unless" in str(err.value)) == (load is load_tokenizer)  # model.path's typo


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(MissingPathError, match="without config.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("load", [load_model, load_tokenizer])
def test_hub_names_offline_fail_at_once_naming_the_local_alternative(load, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingPathError, match="Hub cannot be reached.*model=/path/to/hf_model_dir"):
        load("meta-llama/Llama-2-7b-hf")
