"""BoneTrainer: `transformers.Trainer` training a model from bone.apply, with checkpoints that hold
only the adapter, an exact resume, `bone.load` of any checkpoint, and per-step losses equal to
`bone train`'s on the same batches.

How the two runs see identical batches: `bone train` tokenizes its examples (bone.data), orders
each epoch by `BatchPlan` (a seeded permutation) and pads each micro-batch with `bone.data.collate`.
The Trainer here gets the same tokenized examples already in that epoch's order, a sequential
sampler (`train_sampling_strategy="sequential"`) and `bone.data.collate` as its data collator, so
its k-th micro-batch is bone train's, padded the same way. Loss: bone train divides the summed
token cross-entropy of a global batch by its supervised tokens; Trainer passes that same count
(labels[..., 1:] != -100 over the accumulated micro-batches) to the model as num_items_in_batch.
The optimizer and schedule are bone train's (AdamW betas / eps, no weight decay, cosine to 0
without warmup, gradient clipping at 1.0). No dropout (col has none): a DataLoader draws its base
seed from the global RNG and bone train's loop does not, so dropout masks would differ.
"""
from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from safetensors.torch import load_file

import bone
import tiny
from bone.data import collate, load_records, to_examples, tokenize_examples
from bone.errors import AdapterError, UsageError
from bone.train.sampler import BatchPlan
from bone.train.trainer import Trainer as BoneTrain

hf = pytest.importorskip("transformers")
from bone.integrations.hf_trainer import BoneTrainer, load_adapter_into  # noqa: E402

STEPS = 6


def bone_train_losses(model_dir, out, **extra) -> list[float]:
    trainer = BoneTrain(tiny.config(model_dir, out, **extra)).setup()
    assert trainer.run() == 0
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def hf_trainer(model_dir, out, *, trainer_cls=BoneTrainer, callbacks=None, **extra) -> BoneTrainer:
    """A Trainer over the batches and hyperparameters `bone train` uses for tiny.config(**extra)."""
    cfg = tiny.config(model_dir, out, **extra)
    s, o, d = cfg.schedule, cfg.optim, cfg.data
    tok = bone.load_tokenizer(model_dir)
    model = bone.apply(bone.load_model(model_dir), cfg.bone)
    records = load_records(d.train, split=d.train_split, limit=d.train_limit)
    data = tokenize_examples(to_examples(records), tok, template=d.template, max_length=d.max_length)
    plan = BatchPlan(len(data), s.batch_size, s.grad_accum, 1, 0, s.seed)
    ordered = [data[i] for i in plan.order(0)[: STEPS * plan.global_batch]]
    args = hf.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum, learning_rate=o.lr, lr_scheduler_type=s.scheduler,
        warmup_steps=s.warmup_steps, weight_decay=o.weight_decay, adam_beta1=o.beta1, adam_beta2=o.beta2,
        adam_epsilon=o.eps, max_grad_norm=o.max_grad_norm, optim="adamw_torch_fused", seed=s.seed,
        train_sampling_strategy="sequential", logging_steps=1, save_steps=2, report_to="none", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    return trainer_cls(model=model, args=args, train_dataset=ordered, processing_class=tok,
                       data_collator=partial(collate, pad_token_id=tok.pad_token_id), callbacks=callbacks)


def logged_losses(trainer) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}


@pytest.mark.parametrize("split", [{}, {"schedule.batch_size": 2, "schedule.grad_accum": 2}])
def test_losses_equal_bone_train(split, model_dir, tmp_path):
    want = bone_train_losses(model_dir, tmp_path / "bone", **split)
    trainer = hf_trainer(model_dir, tmp_path / "hf", **split)
    trainer.train()
    got = logged_losses(trainer)
    assert list(got) == list(range(1, STEPS + 1)) and len(want) == STEPS
    assert [got[s] for s in got] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert want[-1] < want[0]  # it trained


class StopAt(hf.TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_adapter_only_checkpoints_resume_exactly_and_load(model_dir, tmp_path):
    full = hf_trainer(model_dir, tmp_path / "full")
    full.train()
    ck = tmp_path / "full" / "checkpoint-6"
    names = {p.name for p in ck.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "bone_config.json", "optimizer.pt", "scheduler.pt",
            "trainer_state.json", "training_args.bin", "tokenizer.json"} <= names
    assert not any(n.startswith("model") for n in names)  # no full weights
    saved = load_file(ck / "adapter_model.safetensors")
    assert len(saved) == 14 and all(k.endswith(".miss_block") for k in saved)

    part = hf_trainer(model_dir, tmp_path / "part", callbacks=[StopAt(3)])
    part.train()
    assert part.state.global_step == 3
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == ["checkpoint-2"]
    resumed = hf_trainer(model_dir, tmp_path / "part")  # a fresh process would build the same, untrained model
    resumed.train(resume_from_checkpoint=True)
    for (name, a), (_, b) in zip(bone.bone_layers(full.model), bone.bone_layers(resumed.model)):
        assert torch.equal(a.bone_block, b.bone_block), name
    a, b = logged_losses(full), logged_losses(resumed)
    assert [b[s] for s in (3, 4, 5, 6)] == [a[s] for s in (3, 4, 5, 6)]

    ids = torch.arange(3, 19).reshape(2, 8)
    loaded = bone.load(bone.load_model(model_dir), ck).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, full.model.eval()(input_ids=ids).logits, rtol=0, atol=0)


def test_load_best_model_at_end_takes_the_best_checkpoint(model_dir, tmp_path):
    """'Best' = highest eval loss here, so the best checkpoint is an early one, not the final state."""
    trainer = hf_trainer(model_dir, tmp_path / "run")
    trainer.args.eval_strategy = hf.IntervalStrategy.STEPS
    trainer.args.eval_steps, trainer.args.load_best_model_at_end = 2, True
    trainer.args.metric_for_best_model, trainer.args.greater_is_better = "loss", True
    trainer.eval_dataset = trainer.train_dataset[:4]
    trainer.train()
    assert trainer.state.best_model_checkpoint == str(tmp_path / "run" / "checkpoint-2")
    best, last = (load_file(tmp_path / "run" / c / "adapter_model.safetensors") for c in ("checkpoint-2", "checkpoint-6"))
    for name, layer in bone.bone_layers(trainer.model):
        key = f"base_model.model.{name}.miss_block"
        assert torch.equal(layer.bone_block.cpu(), best[key]) and not torch.equal(best[key], last[key])


def test_refusals_change_nothing(model_dir, make_llama, tmp_path):
    args = hf.TrainingArguments(output_dir=str(tmp_path / "x"), report_to="none", use_cpu=True)
    with pytest.raises(UsageError, match="has no Bone layer"):
        BoneTrainer(model=make_llama(), args=args)
    model = bone.apply(bone.load_model(model_dir), bone.BoneConfig(r=8))
    bone.save(model, tmp_path / "r8")
    other = bone.apply(bone.load_model(model_dir), bone.BoneConfig(r=16))
    before = [layer.bone_block.clone() for _, layer in bone.bone_layers(other)]
    with pytest.raises(AdapterError, match="col r=8 adapter, the model has col r=16"):
        load_adapter_into(other, tmp_path / "r8")
    assert all(torch.equal(b, layer.bone_block) for b, (_, layer) in zip(before, bone.bone_layers(other)))
