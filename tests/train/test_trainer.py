"""The training recipe on a tiny Llama: checkpoints, exact resume, accumulation, bad input."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

import bone
from bone.errors import ConfigError
from bone.train.trainer import Trainer
from tiny import config

BLOCKS = "adapter/adapter_model.safetensors"


def run(cfg, **kw):
    trainer = Trainer(cfg, **{k: kw.pop(k) for k in ("resume", "overwrite") if k in kw}).setup()
    code = trainer.run(**kw)
    return trainer, code


def test_train_writes_adapter_checkpoints_metrics_and_plot(model_dir, tmp_path):
    out = tmp_path / "run"
    trainer, code = run(config(model_dir, out, **{"logging.plot": True, "checkpointing.keep": 2}))
    assert code == 0
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and "grad_norm" in r for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004", "step-000006"]  # keep=2
    ck = out / "checkpoints" / "step-000006"
    assert {p.name for p in ck.iterdir()} == {"adapter", "optimizer.pt", "scheduler.pt", "rng-rank0.pt", "state.json", "config.yaml"}
    assert json.loads((ck / "state.json").read_text())["step"] == 6
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    blocks = load_file(out / BLOCKS)
    assert len(blocks) == 14 and any(t.abs().max() > 0 for t in blocks.values())
    assert torch.equal(load_file(ck / BLOCKS)[next(iter(blocks))], blocks[next(iter(blocks))])


def test_adapter_loads_in_bone_and_peft_with_equal_logits(model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    run(config(model_dir, out, **{"bone.variant": "shard"}))  # PEFT has shard (MiSS default) and col (bat)
    ids = torch.arange(3, 19).reshape(2, 8)
    ours = bone.load(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter").eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter").eval()
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        a, b, c = ours(input_ids=ids).logits, peft(input_ids=ids).logits, base(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-4)


def test_interrupted_then_resumed_equals_uninterrupted(model_dir, tmp_path):
    extra = {"bone.variant": "col", "checkpointing.every": 100, "schedule.warmup_steps": 2}
    _, code = run(config(model_dir, tmp_path / "full", **extra))
    assert code == 0
    part = config(model_dir, tmp_path / "part", **extra)
    trainer, code = run(part, stop_at=3)
    assert code == 0 and trainer.step == 3
    assert not (tmp_path / "part" / "adapter").exists()
    assert [p.name for p in (tmp_path / "part" / "checkpoints").iterdir()] == ["step-000003"]
    trainer, code = run(part, resume="latest")
    assert code == 0 and trainer.step == 6
    full, resumed = load_file(tmp_path / "full" / BLOCKS), load_file(tmp_path / "part" / BLOCKS)
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)  # bitwise
    losses = lambda d: [json.loads(ln)["loss"] for ln in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(tmp_path / "full") == losses(tmp_path / "part")


def test_resume_may_split_the_global_batch_differently(model_dir, tmp_path):
    """batch 4 x accumulation 1 stopped at step 3, resumed as 2 x 2 (as on another number of GPUs)."""
    run(config(model_dir, tmp_path / "full"))
    run(config(model_dir, tmp_path / "part"), stop_at=3)
    trainer, code = run(config(model_dir, tmp_path / "part", **{"schedule.batch_size": 2, "schedule.grad_accum": 2}),
                        resume="latest")
    assert code == 0 and trainer.step == 6
    a, b = load_file(tmp_path / "full" / BLOCKS), load_file(tmp_path / "part" / BLOCKS)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_tensorboard_events_match_metrics_across_a_resume(model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = config(model_dir, out, **{"logging.tensorboard": True, "checkpointing.every": 2})
    run(cfg, stop_at=3)  # logs steps 1-3, checkpoints at steps 2 and 3
    shutil.rmtree(out / "checkpoints" / "step-000003")  # as if killed before the step-3 checkpoint
    run(cfg, resume="latest")  # resumes at step 2: step 3 is logged again, then 4-6
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "lr", "grad_norm"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [1, 2, 3, 4, 5, 6]
        assert [v for _, v in logged] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_gradient_accumulation_matches_one_big_batch(model_dir, tmp_path):
    big = run(config(model_dir, tmp_path / "a", **{"schedule.batch_size": 4, "schedule.grad_accum": 1}))
    acc = run(config(model_dir, tmp_path / "b", **{"schedule.batch_size": 1, "schedule.grad_accum": 4}))
    assert big[1] == acc[1] == 0
    a, b = load_file(tmp_path / "a" / BLOCKS), load_file(tmp_path / "b" / BLOCKS)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_gradient_checkpointing_gives_the_same_adapter(model_dir, tmp_path):
    run(config(model_dir, tmp_path / "a", **{"schedule.max_steps": 3}))
    run(config(model_dir, tmp_path / "b", **{"schedule.max_steps": 3, "model.gradient_checkpointing": True}))
    a, b = load_file(tmp_path / "a" / BLOCKS), load_file(tmp_path / "b" / BLOCKS)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_bf16_mixed_precision_trains(model_dir, tmp_path):
    trainer, code = run(config(model_dir, tmp_path / "r", **{"schedule.precision": "bf16", "schedule.max_steps": 2}))
    rows = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert code == 0 and all(math.isfinite(r["loss"]) for r in rows)


def test_existing_output_dir_needs_resume_or_overwrite(model_dir, tmp_path):
    out = tmp_path / "run"
    run(config(model_dir, out, **{"schedule.max_steps": 2}))
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        Trainer(config(model_dir, out)).setup()
    trainer, code = run(config(model_dir, out, **{"schedule.max_steps": 1}), overwrite=True)
    assert code == 0 and [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not look like a bone run"):
        Trainer(config(model_dir, stranger), overwrite=True).setup()
    assert (stranger / "todo.txt").read_text() == "mine"


def test_resume_errors(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(config(model_dir, tmp_path / "none"), resume="latest").setup()
    out = tmp_path / "run"
    run(config(model_dir, out), stop_at=2)
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.5"):
        Trainer(config(model_dir, out, **{"optim.lr": 0.5}), resume="latest").setup()
    with pytest.raises(ConfigError, match="global batch 4 was saved, this launch has 8"):
        Trainer(config(model_dir, out, **{"schedule.grad_accum": 2}), resume="latest").setup()
    other = tmp_path / "other"
    run(config(model_dir, other, **{"schedule.max_steps": 1}))
    with pytest.raises(FileExistsError, match="already holds another run"):
        Trainer(config(model_dir, other), resume=str(out)).setup()
    assert [p.name for p in (other / "checkpoints").iterdir()] == ["step-000001"]
    with pytest.raises(ConfigError, match="contradict"):
        Trainer(config(model_dir, out), resume="latest", overwrite=True)


def test_targets_that_do_not_fit_fail_before_writing(model_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="q_proj"):  # the core lists the model's linear layers
        Trainer(config(model_dir, out, **{"bone.target_modules": "[attention_dense]"})).setup()
    with pytest.raises(ValueError, match="r=48"):
        Trainer(config(model_dir, out, **{"bone.r": 48})).setup()
    assert not out.exists()


@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_training_and_held_out_data_may_name_different_fields(model_dir, tmp_path, metric):
    """data.prompt_field / response_field name the training file's fields; the held-out data (here
    bundled arithmetic: question / answer) keeps them unless data.eval_* name its own."""
    from bone.data import arith

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"q": r["question"], "a": r["answer"]}) + "\n" for r in arith.generate(8)))
    same = {"data.train": train, "data.prompt_field": "q", "data.response_field": "a", "data.eval": "bundled:arith",
            "data.eval_limit": 4, "eval.metric": metric}
    with pytest.raises(bone.errors.DataError, match=r"^data.eval bundled:arith: record 0: field 'q' is missing"):
        Trainer(config(model_dir, tmp_path / "a", **same)).setup()
    own = {**same, "data.eval_prompt_field": "question", "data.eval_response_field": "answer"}
    trainer = Trainer(config(model_dir, tmp_path / "b", **own)).setup()
    assert len(trainer.train_set) == 8 and len(trainer.eval_set) == 4
    held_out = bone.data.to_examples(arith.generate(4, split="test"))
    if metric == "accuracy":
        assert [e.prompt for e in trainer.eval_set] == [e.prompt for e in held_out]
