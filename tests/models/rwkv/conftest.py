"""Fixtures for the RWKV tests: a tiny random BlinkDL checkpoint of each version."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rwkv_testlib import MAKERS


@pytest.fixture(params=["x070", "x060"])
def version(request) -> str:
    return request.param


@pytest.fixture
def tiny_pth(tmp_path, version) -> Path:
    """A 2-layer, C=128, head size 64 random checkpoint of the parametrised version."""
    path = tmp_path / f"tiny-{version}.pth"
    torch.save(MAKERS[version](), path)
    return path
