"""Tiny, offline building blocks for the pipeline tests: a BPE tokenizer trained in milliseconds,
a 2-layer Llama (hidden 64) saved as a Hugging Face folder, a small TrainConfig over them, and
random adapters saved as folders.

tests/conftest.py (pytest) puts this folder on sys.path, so any test can `import tiny`."""
from __future__ import annotations

from pathlib import Path


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tokenizer(vocab_size: int = 1000):
    """A tiny byte-level BPE tokenizer trained offline in milliseconds, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bone.data import arith
    from bone.data.templates import ALPACA_PROMPT

    texts = [ALPACA_PROMPT] + [r["question"] + " " + r["answer"] for r in arith.generate(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def make_model_dir(path: Path, *, max_shard_size: str | None = None, dtype=None) -> Path:
    """A tiny random Llama (2 layers, hidden 64) + tokenizer saved at `path` (safetensors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    if dtype is not None:
        model = model.to(dtype)
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kw)
    tok.save_pretrained(path)
    return path


def overrides(model_dir: Path, out_dir: Path, **extra) -> list[str]:
    """key=value overrides of a fast tiny run (6 steps of 4 examples, r=8 on all seven projections)."""
    base = {
        "output_dir": out_dir, "model.path": model_dir, "data.train": "bundled:arith", "data.train_limit": 48,
        "data.max_length": 128, "bone.r": 8, "optim.lr": 1e-3, "schedule.batch_size": 4, "schedule.max_steps": 6,
        "checkpointing.every": 2, "logging.progress": False, "logging.tensorboard": False, "logging.plot": False,
        "eval.after": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def config(model_dir: Path, out_dir: Path, **extra):
    from bone.train import load_config

    return load_config(None, overrides(model_dir, out_dir, **extra))


def random_adapter(model_path, path: Path, cfg, seed: int, std: float = 0.2) -> Path:
    """A Bone adapter with random blocks (a trained adapter's stand-in) for the model at `model_path`
    (anything bone.load_model reads), saved at `path`."""
    import torch

    import bone

    model = bone.apply(bone.load_model(model_path), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.copy_(torch.randn(layer.bone_block.shape, generator=g) * std)
    return bone.save(model, path)


def compare_overrides(model_dir: Path, out_dir: Path, **extra) -> list[str]:
    """key=value overrides of a fast tiny `bone compare` grid: col and lora, two rates each, one seed, 4 steps
    of 4 examples, 10 validation and 16 test problems answered in at most 8 tokens."""
    base = {
        "output_dir": out_dir, "methods": "[col,lora]", "lrs.col": "[1e-3,3e-3]", "lrs.lora": "[1e-3,3e-3]",
        "seeds": "[0]", "validation.limit": 10, "test.limit": 16, "test.base": False, "bootstrap": 500,
        "train.model.path": model_dir, "train.data.train_limit": 48, "train.data.max_length": 128, "train.bone.r": 8,
        "train.schedule.batch_size": 4, "train.schedule.max_steps": 4, "train.checkpointing.every": 2,
        "train.logging.progress": False, "train.logging.tensorboard": False, "train.logging.plot": False,
        "train.eval.max_new_tokens": 8, "train.eval.batch_size": 16,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def compare_config(model_dir: Path, out_dir: Path, **extra):
    from bone.compare import load_compare_config

    return load_compare_config(None, compare_overrides(model_dir, out_dir, **extra))


def config_header(path: Path) -> str:
    """The leading comment block of a config file (what it claims and the commands that run it), unprefixed."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return "\n".join(lines)


def header_processes(text: str, root: Path) -> int:
    """The process count of the Accelerate config a header launches with (`--config_file`, relative
    to `root`); 1 without one."""
    import re

    import yaml

    found = re.search(r"--config_file (\S+)", text)
    return yaml.safe_load((root / found[1]).read_text())["num_processes"] if found else 1


def header_claims(text: str, cfg, n: int, claims, name: str) -> list[str]:
    """Check every (pattern, holds) claim whose pattern `text` matches against `cfg` (n: the process
    count); returns the matched phrases."""
    import re

    checked = []
    for pattern, holds in claims:
        for m in re.finditer(pattern, text):
            assert holds(cfg, m, n), f"{name}: the header says {m[0]!r}, the config does not"
            checked.append(m[0])
    return checked
