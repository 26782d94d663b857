"""Non-finite steps (train/guard.py) on real runs of the tiny Llama: a diverging run stops at the
first bad step with one line, the newest checkpoint is the last finite one, nothing non-finite is
saved and metrics.jsonl stays JSON; optim.skip_nonfinite skips steps without updating the weights,
AdamW or the lr schedule, and is counted in the metrics and the checkpoints."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from bone.errors import NonFiniteError
from bone.train.trainer import Trainer
from tiny import config

BLOCKS = "adapter/adapter_model.safetensors"


def rows(run) -> list[dict]:
    """metrics.jsonl, refusing anything that is not strict JSON (a bare NaN or Infinity)."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return [json.loads(ln, parse_constant=refuse) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def steps(run) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def blocks(ckpt) -> dict:
    return load_file(ckpt / BLOCKS)


def all_finite(tensors: dict) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values())


class Poisoned(Trainer):
    """A real run in which step `at` goes wrong: `how` "loss" makes the embeddings' output NaN (loss and
    gradients NaN), "grad" makes one block's gradient inf while the loss stays finite."""

    def __init__(self, cfg, at: int, how: str, **kw):
        super().__init__(cfg, **kw)
        self.at, self.how = at, how

    def _train_step(self, batches):
        if self.step + 1 != self.at:
            return super()._train_step(batches)
        if self.how == "loss":
            hook = self.bare.get_input_embeddings().register_forward_hook(lambda m, i, out: out * float("nan"))
        else:
            hook = self.params[0].register_hook(lambda g: torch.full_like(g, float("inf")))
        try:
            return super()._train_step(batches)
        finally:
            hook.remove()


def test_lr_1e37_stops_at_the_first_nan_loss_and_keeps_the_last_finite_checkpoint(model_dir, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(config(model_dir, out, **{"optim.lr": 1e37, "checkpointing.every": 1})).setup()
    with pytest.raises(NonFiniteError) as err:
        trainer.run()
    msg = str(err.value)
    assert msg.startswith("step 2: the training loss is nan (gradient norm nan); the run stopped without saving this step "
                          f"(newest checkpoint: {out / 'checkpoints' / 'step-000001'}). Try a lower optim.lr (this run: 1e+37; start "
                          f"again with --overwrite) or optim.skip_nonfinite=N to skip up to N such steps (it may change on --resume)")
    assert "\n" not in msg
    assert steps(out) == ["step-000001"] and all_finite(blocks(out / "checkpoints" / "step-000001"))
    assert not (out / "adapter").exists()
    assert [r["step"] for r in rows(out)] == [1] and math.isfinite(rows(out)[0]["loss"])


def test_lr_1e38_stops_before_adamw_overflows(model_dir, tmp_path):
    """lr / (1 - beta1) = 1e39 is past float32: torch would raise inside AdamW; the guard stops first."""
    out = tmp_path / "run"
    trainer = Trainer(config(model_dir, out, **{"optim.lr": 1e38, "optim.max_grad_norm": "null"})).setup()
    with pytest.raises(NonFiniteError, match=r"^step 1: AdamW's update size lr / \(1 - beta1\^t\) = 1e\+39 \(lr 1e\+38, t=1\) "
                                             r"does not fit float32 \(largest 3.4e\+38\); .*\(no checkpoint was written yet\)\. "
                                             r"Try a lower optim.lr \(this run: 1e\+38\) or gradient clipping"):
        trainer.run()
    assert not out.exists()  # a fresh run that saved nothing leaves no folder


def test_16bit_trained_tensors_that_overflow_are_named_and_fp32_is_advised_first(model_dir, tmp_path):
    """float16 adapter blocks under the per-tensor AdamW: eps=1e-8 is 0 in float16, so the first update
    divides by zero (the fused AdamW computes in fp32 and does not overflow here)."""
    out = tmp_path / "run"
    trainer = Trainer(config(model_dir, out, **{"bone.dtype": "float16", "optim.lr": 1e-4, "optim.fused": False})).setup()
    with pytest.raises(NonFiniteError) as err:
        trainer.run()
    assert str(err.value).startswith("step 1: the optimizer step made 14 trained tensor(s) non-finite: "
                                     "model.layers.0.self_attn.q_proj.bone_adapters.default.block, ")
    assert "Try fp32 instead of 16-bit (float32 trained tensors, not float16) or a lower optim.lr" in str(err.value)
    assert "skip_nonfinite" not in str(err.value)  # an applied update cannot be skipped


def test_skipped_steps_change_nothing_and_are_counted_across_a_resume(model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = config(model_dir, out, **{"optim.lr": 1e37, "optim.skip_nonfinite": 2, "checkpointing.every": 1,
                                    "checkpointing.keep": 10})
    with pytest.raises(NonFiniteError, match=r"^step 4: the training loss is nan .*a larger optim.skip_nonfinite "
                                             r"\(2 skipped already; it may change on --resume\)"):
        Trainer(cfg).setup().run()
    assert steps(out) == ["step-000001", "step-000002", "step-000003"]
    ck = [out / "checkpoints" / f"step-00000{i}" for i in (1, 2, 3)]
    first = blocks(ck[0])
    for c in ck[1:]:  # skipped: the weights, AdamW's state and the schedule stay as step 1 left them
        assert all(torch.equal(first[k], v) for k, v in blocks(c).items())
        assert all(float(s["step"]) == 1.0 for s in torch.load(c / "optimizer.pt", weights_only=True)["state"].values())
        assert torch.load(c / "scheduler.pt", weights_only=True)["last_epoch"] == 1
    assert [json.loads((c / "state.json").read_text())["skipped"] for c in ck] == [0, 1, 2]
    got = rows(out)
    assert [(r["step"], r["loss"], r["grad_norm"], r["skipped_steps"]) for r in got[1:]] == [(2, None, None, 1), (3, None, None, 2)]
    assert got[1]["lr"] == got[2]["lr"] < got[0]["lr"]  # the schedule did not advance over the skipped step

    more = config(model_dir, out, **{"optim.lr": 1e37, "optim.skip_nonfinite": 3, "checkpointing.every": 1,
                                     "checkpointing.keep": 10})  # skip_nonfinite may change on --resume
    with pytest.raises(NonFiniteError, match=r"^step 5: .*\(3 skipped already"):
        Trainer(more, resume="latest").setup().run()
    assert json.loads((out / "checkpoints" / "step-000004" / "state.json").read_text())["skipped"] == 3


def test_one_bad_step_is_skipped_and_the_run_finishes(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = Poisoned(config(model_dir, out, **{"optim.skip_nonfinite": 1}), at=3, how="loss").setup()
    assert trainer.run() == 0
    assert "step 3: the training loss is nan (gradient norm nan); skipped (1 of optim.skip_nonfinite=1)" in capsys.readouterr().out
    got = rows(out)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6] and got[2]["loss"] is None
    assert [r["skipped_steps"] for r in got] == [0, 0, 1, 1, 1, 1]
    assert all(math.isfinite(r["loss"]) for i, r in enumerate(got) if i != 2)
    assert got[3]["lr"] == got[2]["lr"]  # step 4 ran at the lr step 3 would have had
    final = out / "checkpoints" / "step-000006"
    assert all(float(s["step"]) == 5.0 for s in torch.load(final / "optimizer.pt", weights_only=True)["state"].values())
    assert all_finite(load_file(out / BLOCKS)) and any(t.abs().max() > 0 for t in load_file(out / BLOCKS).values())


def test_without_a_budget_the_same_step_stops_the_run(model_dir, tmp_path):
    out = tmp_path / "run"
    trainer = Poisoned(config(model_dir, out), at=3, how="loss").setup()
    with pytest.raises(NonFiniteError, match=r"^step 3: the training loss is nan .*newest checkpoint: .*step-000002\)"):
        trainer.run()
    assert steps(out) == ["step-000002"] and [r["step"] for r in rows(out)] == [1, 2]


def test_non_finite_gradients_with_a_finite_loss_stop_the_run(model_dir, tmp_path):
    out = tmp_path / "run"
    trainer = Poisoned(config(model_dir, out, **{"optim.max_grad_norm": "null"}), at=2, how="grad").setup()
    with pytest.raises(NonFiniteError, match=r"^step 2: the gradients are not finite; .*Try a lower optim.lr "
                                             r"\(this run: 0.001\), gradient clipping \(optim.max_grad_norm=1.0\) or "
                                             r"optim.skip_nonfinite=N"):
        trainer.run()
    assert not out.exists()  # stopped before its first checkpoint (every 2 steps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_bad_flags_nan_and_inf_and_never_large_finite_values(dtype):
    """The per-tensor check (one float64 sum for 16/32-bit tensors) flags NaN, inf and -inf, and no
    tensor of finite values, even one full of the dtype's largest value."""
    from bone.train.guard import _bad

    big, t = torch.finfo(dtype).max, lambda *v: torch.tensor(v, dtype=dtype)  # noqa: E731
    cases = {"ok": torch.randn(64, 33, dtype=dtype), "max": torch.full((4096, 64), big, dtype=dtype),
             "mixed": t(*[big, -big] * 99), "nan": t(1.0, math.nan), "inf": t(math.inf, 1.0),
             "-inf": t(0.0, -math.inf), "inf-inf": t(math.inf, -math.inf)}
    flags = _bad(list(cases.values()), "cpu").tolist()
    assert dict(zip(cases, flags)) == {"ok": 0, "max": 0, "mixed": 0, "nan": 1, "inf": 1, "-inf": 1, "inf-inf": 1}
