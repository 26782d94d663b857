"""Helpers shared by the integration tests (imported as a module: tests/integrations is on sys.path)."""
from __future__ import annotations

import warnings

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEFT_INIT = {"col": "bat", "shard": True, "mini": "mini"}  # bone variant -> PEFT MissConfig.init_weights
KERNEL_NODES = {"ColFnBackward", "ShardFnBackward", "TritonColFnBackward"}  # grad_fn of a Flash-Bone output


def randomize_miss(model, std: float = 0.05, seed: int = 2):
    """Random values in every PEFT miss_block (zeros would hide most of the math)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "miss_block" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def miss_layers(model):
    from peft.tuners.miss import MissLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, MissLayer)]


class NodeLog:
    """Records, per MiSS layer call, the autograd node of its output (which path ran)."""

    def __init__(self, model):
        self.nodes: list[str] = []
        self.handles = [m.register_forward_hook(self._hook) for _, m in miss_layers(model)]

    def _hook(self, module, args, out):
        node = out.grad_fn
        if type(node).__name__ == "ToCopyBackward0":  # the cast back to the input dtype
            node = node.next_functions[0][0]
        self.nodes.append(type(node).__name__ if node is not None else "none")

    def kernel_calls(self) -> int:
        return sum(n in KERNEL_NODES for n in self.nodes)

    def close(self):
        for h in self.handles:
            h.remove()


def flash_warnings(fn, *args, **kw):
    """(result, [messages of the bone.flash warnings]) for fn(*args, **kw)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kw)
    return result, [str(w.message) for w in caught if "bone.flash" in str(w.message)]
