"""Fixtures for the integration tests: tiny PEFT MiSS models with random (trained-like) blocks."""
from __future__ import annotations

import pytest
import torch

from miss_helpers import PEFT_INIT, TARGETS, NodeLog, randomize_miss


@pytest.fixture
def make_peft(make_llama):
    """make_peft(variant, r=16, dropout=0.0, mini_r=8, ...) -> a PeftModel (MiSS) in train mode."""
    import peft

    def make(variant="col", *, r=16, dropout=0.0, mini_r=8, targets=TARGETS, dtype=torch.float32, seed=2, **kw):
        cfg = peft.MissConfig(r=r, mini_r=mini_r, init_weights=PEFT_INIT[variant], miss_dropout=dropout,
                              target_modules=targets)
        return randomize_miss(peft.get_peft_model(make_llama(dtype), cfg, **kw), seed=seed).train()

    return make


@pytest.fixture
def node_log():
    """node_log(model) -> a NodeLog on its MiSS layers (hooks removed after the test)."""
    logs = []

    def make(model):
        logs.append(NodeLog(model))
        return logs[-1]

    yield make
    for log in logs:
        log.close()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny Llama + tokenizer folder (tests/tiny.py), shared by the trainer tests."""
    import tiny

    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny-llama"))
