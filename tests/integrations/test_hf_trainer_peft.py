"""The recipe `PeftModel` (MiSS) + `bone.flash` trained by `transformers.Trainer` and by TRL's
`SFTTrainer`: per-step training losses equal the same steps of PEFT without flash (fixed seed,
same data, same dropout draws) within 1e-5, and the Flash-Bone kernels are what ran."""
from __future__ import annotations

from functools import partial

import pytest

import bone
from bone.data import collate, load_records, to_examples, tokenize_examples
from miss_helpers import PEFT_INIT, TARGETS, NodeLog

peft = pytest.importorskip("peft")
hf = pytest.importorskip("transformers")
STEPS = 4


def peft_model(model_dir, variant: str, dropout: float):
    cfg = peft.MissConfig(r=16, mini_r=16, init_weights=PEFT_INIT[variant], miss_dropout=dropout, target_modules=TARGETS)
    return peft.get_peft_model(bone.load_model(model_dir), cfg)


def train_losses(trainer, flashed: bool) -> list[float]:
    log = NodeLog(trainer.model)
    trainer.train()
    log.close()
    assert (log.kernel_calls() >= 14 * STEPS) if flashed else log.kernel_calls() == 0
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def common_args(out) -> dict:
    return dict(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4, learning_rate=1e-3, seed=0,
                logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                bf16=False)  # fp32: autocast would make both runs equal only to bf16 precision


@pytest.mark.parametrize("variant,dropout", [("col", 0.0), ("shard", 0.1), ("mini", 0.1)])
def test_trainer_losses_equal_peft(variant, dropout, model_dir, tmp_path):
    tok = bone.load_tokenizer(model_dir)
    data = tokenize_examples(to_examples(load_records("bundled:arith", limit=16)), tok, max_length=96)
    examples = [data[i] for i in range(len(data))]

    def run(flashed: bool) -> list[float]:
        model = peft_model(model_dir, variant, dropout)
        if flashed:
            bone.flash(model)
        trainer = hf.Trainer(model=model, args=hf.TrainingArguments(**common_args(tmp_path / str(flashed))),
                             train_dataset=examples, data_collator=partial(collate, pad_token_id=tok.pad_token_id))
        return train_losses(trainer, flashed)

    want, got = run(False), run(True)
    assert len(want) == STEPS and got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_sft_trainer_with_gradient_checkpointing_losses_equal_peft(model_dir, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    records = load_records("bundled:arith", limit=16)
    data = datasets.Dataset.from_list([{"prompt": r["question"], "completion": " " + r["answer"]} for r in records])

    def run(flashed: bool) -> list[float]:
        model = peft_model(model_dir, "shard", 0.1)
        if flashed:
            bone.flash(model)
        args = trl.SFTConfig(**common_args(tmp_path / str(flashed)), max_length=96, gradient_checkpointing=True)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=bone.load_tokenizer(model_dir))
        return train_losses(trainer, flashed)

    want, got = run(False), run(True)
    assert len(want) == STEPS and got == pytest.approx(want, rel=1e-5, abs=1e-5)
