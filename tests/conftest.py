"""Shared fixtures: tiny models built from configs (seconds, no downloads)."""
from __future__ import annotations

import copy
import os
import subprocess
import uuid

import pytest
import torch
from torch import nn


def _worker_threads() -> int | None:
    """Under pytest-xdist (`make test` runs `-n auto`), each worker's share of the cores; None otherwise.
    Workers that each ran torch's default of one thread per core would oversubscribe the CPU (OpenMP
    threads spin while they wait for each other)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    return None if workers is None else max(1, (os.cpu_count() or 1) // int(workers))


WORKER_THREADS = _worker_threads()
if WORKER_THREADS is not None:
    os.environ.setdefault("OMP_NUM_THREADS", str(WORKER_THREADS))  # the processes tests start


@pytest.fixture(autouse=True)
def _worker_cpu_share():
    """Every test starts at the worker's share (a test may set torch's threads, as `bone bench` does)."""
    if WORKER_THREADS is not None:
        torch.set_num_threads(WORKER_THREADS)
    yield


class TinyMLP(nn.Module):
    """Two linear layers of a chosen kind: torch Linear or transformers Conv1D (GPT-2 layout)."""

    def __init__(self, kind: str = "linear", d_in: int = 32, d_hidden: int = 48, d_out: int = 32, bias: bool = True):
        super().__init__()
        if kind == "linear":
            self.fc1 = nn.Linear(d_in, d_hidden, bias=bias)
            self.fc2 = nn.Linear(d_hidden, d_out, bias=bias)
        else:
            from transformers.pytorch_utils import Conv1D

            self.fc1 = Conv1D(d_hidden, d_in)
            self.fc2 = Conv1D(d_out, d_hidden)
            for m in (self.fc1, self.fc2):
                nn.init.normal_(m.weight, std=0.2)
                nn.init.normal_(m.bias, std=0.1)
        self.act = nn.GELU()
        self.config = None

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def tiny_llama_config(**kw):
    from transformers import LlamaConfig

    base = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base.update(kw)
    return LlamaConfig(**base)


@pytest.fixture
def llama_config():
    """llama_config(**overrides) -> a tiny LlamaConfig."""
    return tiny_llama_config


@pytest.fixture(scope="session")
def llama_state():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def make_llama(llama_state):
    """A fresh tiny Llama with the same weights every call."""
    from transformers import LlamaForCausalLM

    def make(dtype=torch.float32):
        model = LlamaForCausalLM(tiny_llama_config())
        model.load_state_dict(llama_state)
        return model.to(dtype).eval()

    return make


@pytest.fixture
def make_mlp():
    def make(kind="linear", dtype=torch.float32, **kw):
        torch.manual_seed(1)
        return TinyMLP(kind, **kw).to(dtype).eval()

    return make


def _randomize(model, std=0.05, seed=0):
    import bone

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.copy_(torch.randn(layer.bone_block.shape, generator=g) * std)
    return model


@pytest.fixture
def randomize():
    """randomize(model, std, seed): random adapter blocks (a trained adapter stand-in)."""
    return _randomize

@pytest.fixture(scope="session")
def tokenizer():
    from tiny import build_tokenizer

    return build_tokenizer()


class SmallDisk:
    """A fresh tmpfs of a few hundred KiB: writes past its size fail with ENOSPC like a full disk."""

    def __init__(self, path):
        self.path = path

    def fill(self, leave: int = 0) -> None:
        """Write a filler file until at most `leave` bytes are free."""
        stat = os.statvfs(self.path)
        free = stat.f_bavail * stat.f_frsize - leave
        with open(os.path.join(self.path, ".filler"), "wb") as f:
            while free > 0:
                n = min(free, 1 << 16)
                try:
                    f.write(b"\0" * n)
                    f.flush()
                except OSError:
                    break
                free -= n


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(kib) -> a SmallDisk on a fresh tmpfs of that size (a real full disk). Mounting
    needs root; where the machine does not allow it the test is skipped (the tests that monkeypatch
    a writer to raise ENOSPC cover that case)."""
    mounts = []

    def make(kib: int = 256) -> SmallDisk:
        path = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")
        mounts.append(path)
        return SmallDisk(path)

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
