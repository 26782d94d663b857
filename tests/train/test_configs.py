"""Every config shipped in configs/ loads, validates, and sets what its header comment says.

A training config's header (the leading `#` lines) describes the run in words and shows the
command that starts it. Each phrase of `CLAIMS` found in a header is checked against the loaded
config (so editing a value without its description fails here), and the header's own command
lines are loaded with their overrides. The models and data the configs name are not touched.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from bone.train import load_config
from tiny import config_header, header_claims, header_processes

ROOT = Path(__file__).parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
TRAIN_CONFIGS = [p for p in CONFIGS if "accelerate" not in p.name and not p.name.startswith("compare-")]  # compare-*: tests/compare
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# (phrase in the header, what the config must then hold); m is the match, n the process count
CLAIMS = [
    (r"Bone-(col|row|shard|mini)\b", lambda c, m, n: c.method == "bone" and c.bone.variant == m[1]),
    (r"\br=(\d+)", lambda c, m, n: c.bone.r == int(m[1])),
    (r"q,k,v,o,gate,up,down", lambda c, m, n: sorted(c.bone.target_modules) == sorted(LLAMA_TARGETS)),
    (r"\blr (\d[\d.e-]*)", lambda c, m, n: c.optim.lr == float(m[1])),
    (r"\b(cosine|linear|constant)\b", lambda c, m, n: c.schedule.scheduler == m[1]),
    (r"no warmup", lambda c, m, n: c.schedule.warmup_steps == 0),
    (r"global batch (\d+)", lambda c, m, n: c.schedule.batch_size * c.schedule.grad_accum * n == int(m[1])),
    (r"(?:max length|ctx) (\d+)", lambda c, m, n: c.data.max_length == int(m[1])),
    (r"gradient checkpointing", lambda c, m, n: c.model.gradient_checkpointing),
    (r"\bbf16\b", lambda c, m, n: c.schedule.precision == "bf16"),
    (r"trained parts (\w+) \+ (\w+)", lambda c, m, n: sorted(c.bone.train_parts) == sorted([m[1], m[2]])),
    (r"betas ([\d.]+)/([\d.]+)", lambda c, m, n: (c.optim.beta1, c.optim.beta2) == (float(m[1]), float(m[2]))),
    (r"\beps (\d[\d.e-]*)", lambda c, m, n: c.optim.eps == float(m[1])),
    (r"no weight decay", lambda c, m, n: c.optim.weight_decay == 0),
    (r"gradient clipping ([\d.]+)", lambda c, m, n: c.optim.max_grad_norm == float(m[1])),
    (r"micro-batch (\d+)", lambda c, m, n: c.schedule.batch_size == int(m[1])),
    (r"\b(\d+) epochs?\b", lambda c, m, n: c.schedule.epochs == int(m[1]) and c.schedule.max_steps is None),
    (r"\b(\d+) steps\b", lambda c, m, n: c.schedule.max_steps == int(m[1])),
    (r"SmolLM2-135M", lambda c, m, n: c.model.path == "smollm2-135m"),
    (r"LLaMA2-7B", lambda c, m, n: "Llama-2-7b" in c.model.path),
    (r"RWKV-6", lambda c, m, n: "x060" in c.model.path and c.model.path.endswith(".pth") and c.bone.target_modules is None),
    (r"World tokenizer comes with the model", lambda c, m, n: c.model.tokenizer is None),
    (r"MetaMathQA", lambda c, m, n: "MetaMathQA" in c.data.train),
    (r"bundled arithmetic", lambda c, m, n: c.data.train == "bundled:arith"),
    (r"held-out accuracy before and after", lambda c, m, n: c.data.eval and c.eval.before and c.eval.after
     and c.eval.metric == "accuracy"),
    (r"on (\d+) GPUs", lambda c, m, n: n == int(m[1])),
    (r"same math as (\S+\.yaml)", lambda c, m, n: c.run_defining() == load_config(ROOT / "configs" / m[1]).run_defining()),
    (r"(runs/\S+)/adapter", lambda c, m, n: c.output_dir == m[1]),
]


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "llama2-7b-metamath.yaml", "llama2-7b-metamath-multigpu.yaml", "rwkv6-3b-metamath.yaml",
            "accelerate-4gpu.yaml", "accelerate-4gpu-fsdp2.yaml", "accelerate-4gpu-zero3.yaml"} <= names


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_config_sets_what_its_header_says(path):
    text = config_header(path)
    cfg, n = load_config(path), header_processes(text, ROOT)
    checked = header_claims(text, cfg, n, CLAIMS, path.name)
    assert len(checked) >= 5, f"{path.name}: the header describes too little to check ({checked})"


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_header_commands_run_this_config_and_their_overrides_load(path):
    commands = [shlex.split(line)[line.split().index("train") + 1:] for line in config_header(path).splitlines()
                if re.search(r"\bbone train\b", line)]
    assert commands, f"{path.name}: no `bone train` command in the header"
    for argv in commands:
        assert argv[0] == f"configs/{path.name}"
        overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
        cfg = load_config(path, overrides)
        for item in overrides:
            key, value = item.split("=", 1)
            section, name = key.split(".")
            assert str(getattr(getattr(cfg, section), name)) == value


# one record of each public format the recipes read (fields as their comments name them)
FORMATS = {"MetaMathQA": {"query": "What is 2 + 3?", "response": "2 + 3 = 5\nThe answer is: 5"},
           "gsm8k": {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}}


@pytest.mark.parametrize("path", [p for p in CONFIGS if "metamath" in p.name], ids=lambda p: p.name)
def test_metamath_recipes_read_metamath_for_training_and_gsm8k_held_out(path):
    """The recipes name MetaMathQA's fields for training; the held-out GSM8K data has its own."""
    from bone.compare import load_compare_config
    from bone.data import to_examples

    data = (load_compare_config(path).train if path.name.startswith("compare-") else load_config(path)).data
    train, = to_examples([FORMATS["MetaMathQA"]], **data.fields())
    held_out, = to_examples([FORMATS["gsm8k"]], **data.fields(held_out=True))
    assert train.prompt == held_out.prompt == "What is 2 + 3?" and held_out.response.endswith("#### 5")


def test_the_paper_recipes_differ_only_in_how_the_batch_is_split():
    one = load_config(ROOT / "configs" / "llama2-7b-metamath.yaml")
    four = load_config(ROOT / "configs" / "llama2-7b-metamath-multigpu.yaml")
    assert one.run_defining() == four.run_defining() and one.output_dir != four.output_dir
    assert (one.schedule.grad_accum, four.schedule.grad_accum) == (16, 4)


@pytest.mark.parametrize("name,kind", [("accelerate-4gpu.yaml", "MULTI_GPU"), ("accelerate-4gpu-fsdp2.yaml", "FSDP"),
                                       ("accelerate-4gpu-zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_load_in_accelerate(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    path = ROOT / "configs" / name
    acc = yaml.safe_load(path.read_text())
    assert acc["num_processes"] == 4 and acc["mixed_precision"] == "bf16"
    cluster = ClusterConfig.from_yaml_file(str(path))
    assert str(cluster.distributed_type).endswith(kind)
    if kind == "FSDP":
        assert cluster.fsdp_config["fsdp_version"] == 2
    if kind == "DEEPSPEED":  # bone.apply needs the whole base model in every process before ZeRO-3 partitions it
        assert cluster.deepspeed_config["zero_stage"] == 3 and cluster.deepspeed_config["zero3_init_flag"] is False
