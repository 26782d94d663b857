"""The compare presets in configs/ load (with and without --quick) and set what their headers say; the
commands in their headers load with their overrides. The models and data they name are not touched."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bone.compare import load_compare_config
from tiny import config_header, header_claims, header_processes

ROOT = Path(__file__).parents[2]
PRESETS = sorted((ROOT / "configs").glob("compare-*.yaml"))


# (phrase in the header, what the config must then hold); m is the match, n the process count
CLAIMS = [
    (r"SmolLM2-135M", lambda c, m, n: c.train.model.path == "smollm2-135m"),
    (r"LLaMA2-7B", lambda c, m, n: "Llama-2-7b" in c.train.model.path),
    (r"bundled arithmetic", lambda c, m, n: c.train.data.train == "bundled:arith"),
    (r"MetaMathQA", lambda c, m, n: "MetaMathQA" in c.train.data.train),
    (r"Bone-col \(the reference\)|Bone-col r=64 against", lambda c, m, n: c.reference == "col" and c.train.bone.variant == "col"),
    (r"Bone r=(\d+)|Bone-col r=(\d+)", lambda c, m, n: c.train.bone.r == int(m[1] or m[2])),
    (r"LoRA r=(\d+) and PiSSA r=(\d+)", lambda c, m, n: c.train.lora.r == int(m[1]) == int(m[2])),
    (r"lora\.r: auto", lambda c, m, n: c.train.lora.r == "auto"),
    (r"q,k,v,o,gate,up,down", lambda c, m, n: len(c.train.bone.target_modules) == 7),
    (r"(\d+) learning rates\s+per method", lambda c, m, n: all(len(c.lrs[a]) == int(m[1]) for a in c.methods)),
    (r"lr (\d[\d.e-]*) for every method", lambda c, m, n: all(c.lrs[a] == [float(m[1])] for a in c.methods)),
    (r"(\d+) seeds?\b", lambda c, m, n: len(c.seeds) == int(m[1])),
    (r"(\d+) validation problems", lambda c, m, n: c.validation.limit == int(m[1])),
    (r"(\d+) steps of global batch (\d+)", lambda c, m, n: c.train.schedule.max_steps == int(m[1])
     and c.train.schedule.batch_size * c.train.schedule.grad_accum * n == int(m[2])),
    (r"global batch (\d+) on", lambda c, m, n: c.train.schedule.batch_size * c.train.schedule.grad_accum * n == int(m[1])),
    (r"(\d+) test problems", lambda c, m, n: c.test.limit == int(m[1])),
    (r"all 1319 problems", lambda c, m, n: c.test.limit is None),
    (r"max length (\d+)", lambda c, m, n: c.train.data.max_length == int(m[1])),
    (r"\bbf16\b", lambda c, m, n: c.train.schedule.precision == "bf16"),
    (r"gradient checkpointing", lambda c, m, n: c.train.model.gradient_checkpointing),
    (r"no warmup", lambda c, m, n: c.train.schedule.warmup_steps == 0),
    (r"\b(cosine|linear|constant)\b", lambda c, m, n: c.train.schedule.scheduler == m[1]),
    (r"(\d+) epoch", lambda c, m, n: c.train.schedule.epochs == int(m[1]) and c.train.schedule.max_steps is None),
    (r"on (\d+) GPUs", lambda c, m, n: n == int(m[1])),
]


def test_presets_are_shipped():
    assert {p.name for p in PRESETS} == {"compare-demo.yaml", "compare-llama2-7b-metamath.yaml"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_sets_what_its_header_says(path):
    """Header lines that start with --quick describe the config with its quick overrides."""
    lines = config_header(path).splitlines()
    n = header_processes(config_header(path), ROOT)
    checked = []
    for quick in (False, True):
        text = "\n".join(ln for ln in lines if ln.startswith("--quick") == quick)
        cfg = load_compare_config(path, quick=quick) if text else None
        checked += header_claims(text, cfg, n, CLAIMS, path.name)
    assert len(checked) >= 8, f"{path.name}: the header describes too little to check ({checked})"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_header_commands_load(path):
    commands = [shlex.split(line) for line in config_header(path).splitlines() if re.match(r"(bone compare|accelerate launch) ", line)]
    assert commands
    for argv in commands:
        rest = argv[argv.index("compare") + 1:]
        assert rest[0] == f"configs/{path.name}"
        overrides = [a for a in rest[1:] if "=" in a]
        cfg = load_compare_config(path, overrides, quick="--quick" in rest)
        assert cfg.train.eval.metric == "accuracy"


def test_the_demo_quick_look_is_the_same_comparison_smaller():
    full = load_compare_config(ROOT / "configs" / "compare-demo.yaml")
    quick = load_compare_config(ROOT / "configs" / "compare-demo.yaml", quick=True)
    assert full.methods == quick.methods == ["col", "shard", "lora", "pissa"] and full.lrs == quick.lrs
    assert len(full.seeds) == 2 and quick.seeds == [0] and quick.test.limit < full.test.limit
    assert full.test.limit >= 300 and full.output_dir != quick.output_dir
    assert all(2 <= len(full.lrs[a]) <= 3 for a in full.methods)


def test_the_paper_preset_matches_the_papers_counts():
    """LoRA r=36 and Bone-col r=64 on LLaMA2-7B's seven projections: 89.9M and 87.0M trainable."""
    from bone import methods
    from bone.compare.config import run_config

    cfg = load_compare_config(ROOT / "configs" / "compare-llama2-7b-metamath.yaml")
    shapes = {"q_proj": (4096, 4096), "k_proj": (4096, 4096), "v_proj": (4096, 4096), "o_proj": (4096, 4096),
              "gate_proj": (11008, 4096), "up_proj": (11008, 4096), "down_proj": (4096, 11008)}
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                             num_attention_heads=32, vocab_size=32000))
    assert all(model.get_submodule(f"model.layers.0.{'self_attn' if k[0] in 'qkvo' else 'mlp'}.{k}").weight.shape == s
               for k, s in shapes.items())
    col = methods.get("bone").count(model, run_config(cfg, "col", 2e-5, 42))
    lora = methods.get("lora").count(model, run_config(cfg, "lora", 2e-5, 42))
    assert (round(col / 1e6, 1), round(lora / 1e6, 1)) == (87.0, 89.9)
