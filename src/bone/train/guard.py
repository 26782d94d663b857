"""Non-finite training steps: found on every process at once, then stopped (or skipped).

Each optimizer step is checked three times:
  before it starts   AdamW's update size for this step, lr / (1 - beta1^t) (and lr * weight_decay), must be
                     representable in the trained tensors' dtype (torch raises a float overflow inside
                     AdamW otherwise: optim.lr=1e38 in fp32); the same on every process, no communication
  before the update  the loss of the global batch and every gradient (one all-reduce)
  after the update   every trained tensor (one all-reduce): a finite step can still carry them past the range
A bad step stops the run with a NonFiniteError (one line: the step, what went non-finite, what to try)
before anything of it is saved, so the newest checkpoint is the last finite one.

`optim.skip_nonfinite: N` skips instead up to N steps whose loss or gradients are not finite, as
torch's GradScaler, DeepSpeed and the Hugging Face Trainer skip an fp16 overflow: the gradients are
zeroed, neither AdamW nor the lr schedule steps, and the batch counts as consumed (the step number
advances). An update that made the weights non-finite cannot be undone, so that always stops. Under
DeepSpeed the engine applies the update inside backward, before bone can look, so skipping is
refused there (`launch.check_launch`) and a bad step stops the run.
"""
from __future__ import annotations

import math

import torch

from ..errors import NonFiniteError
from .collective import everywhere
from .config import TrainConfig
from .rundir import RunDir


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: its shard of an FSDP2 DTensor or ZeRO-3 parameter, else itself."""
    if hasattr(t, "ds_tensor"):
        return t.ds_tensor
    if hasattr(t, "to_local"):
        return t.to_local()
    return t


def _finite(t: torch.Tensor) -> torch.Tensor:
    """0-d bool: `t` holds no NaN or inf. For 16/32-bit floats one float64 sum decides it (5x faster
    than isfinite().all() on a CPU): a NaN or inf operand makes the sum NaN or +-inf, and a sum of
    finite values below 3.4e38 each cannot overflow float64 (it would take 5e269 of them)."""
    if t.dtype == torch.float64:
        return torch.isfinite(t).all()
    return torch.isfinite(t.sum(dtype=torch.float64))


def _bad(tensors: list[torch.Tensor], device) -> torch.Tensor:
    """Per tensor, 1.0 where it holds a NaN or inf (on `device`, ready to all-reduce)."""
    if not tensors:
        return torch.zeros(0, device=device)
    return (~torch.stack([_finite(t) for t in tensors])).to(device, torch.float32)


class NonFiniteGuard:
    """Checks each optimizer step of one run; `skipped` counts the steps skipped so far (it is checkpointed)."""

    def __init__(self, acc, named: list[tuple[str, torch.Tensor]], cfg: TrainConfig, run: RunDir, *, can_skip: bool):
        self.acc, self.named, self.cfg, self.run, self.can_skip = acc, named, cfg, run, can_skip
        self.budget = cfg.optim.skip_nonfinite if can_skip else 0
        self.skipped = 0

    def check_update(self, step: int, param_groups: list[dict]) -> None:
        """Before step `step` (1-based) starts: raise when AdamW's update for it cannot be represented."""
        dtype = min((p.dtype for _, p in self.named), key=lambda d: torch.finfo(d).max)
        limit, t = torch.finfo(dtype).max, step - self.skipped  # skipped steps did not advance AdamW's t
        for g in param_groups:
            lr, beta1, decay = g["lr"], g["betas"][0], g["weight_decay"]
            size = max(lr / (1.0 - beta1 ** t), lr * decay)
            if not size <= limit:
                raise self._stop(step, f"AdamW's update size lr / (1 - beta1^t) = {size:.3g} (lr {lr:.3g}, t={t}) "
                                       f"does not fit {str(dtype).removeprefix('torch.')} (largest {limit:.3g})", skippable=False)

    def check_step(self, step: int, loss_sum: torch.Tensor, supervised: float, grad_norm) -> tuple[float, bool]:
        """After backward, before the update (collective): the loss per supervised token of the global
        batch, and whether this step is skipped. Raises NonFiniteError to stop."""
        norm = None if grad_norm is None else float(_local(grad_norm)) if torch.is_tensor(grad_norm) else float(grad_norm)
        if norm is not None:  # any NaN / inf gradient makes the global norm non-finite (so does an overflowing norm)
            bad = torch.tensor(0.0 if math.isfinite(norm) else 1.0, device=loss_sum.device)
        else:
            grads = [_local(p.grad) for _, p in self.named if p.grad is not None]  # none under DeepSpeed: it holds them
            bad = _bad(grads, loss_sum.device).sum()
        total = self.acc.reduce(torch.stack([loss_sum.float(), bad]), reduction="sum").tolist()
        loss = total[0] / max(supervised, 1.0)
        if math.isfinite(loss) and total[1] == 0:
            return loss, False
        what = f"the training loss is {loss}" if not math.isfinite(loss) else "the gradients are not finite"
        if norm is not None:
            what += f" (gradient norm {norm:.4g})"
        if self.skipped < self.budget:
            self.skipped += 1
            if self.acc.is_main_process:
                print(f"step {step}: {what}; skipped ({self.skipped} of optim.skip_nonfinite={self.budget})", flush=True)
            return loss, True
        raise self._stop(step, what, skippable=True)

    def check_params(self, step: int) -> None:
        """After the update (collective): raise when any trained tensor holds NaN or inf, naming them."""
        counts = self.acc.reduce(_bad([_local(p) for _, p in self.named], self.acc.device), reduction="sum").tolist()
        names = [name for (name, _), c in zip(self.named, counts) if c > 0]
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise self._stop(step, f"the optimizer step made {len(names)} trained tensor(s) non-finite: {shown}", skippable=False)

    def _stop(self, step: int, what: str, *, skippable: bool) -> NonFiniteError:
        """The one line: the step, what went non-finite, the newest checkpoint, what to try (every
        process decides alike, from all-reduced values or the config)."""
        cfg, newest = self.cfg, self.run.latest()
        again = "; start again with --overwrite" if newest is not None else ""  # the other options fix the run
        tries = [f"a lower optim.lr (this run: {cfg.optim.lr:g}{again})"]
        low = sorted({str(p.dtype).removeprefix("torch.") for _, p in self.named if p.dtype != torch.float32})
        fp32 = [k for k, bad in (("schedule.precision=fp32", cfg.schedule.precision != "fp32"),
                                 ("model.dtype=float32", cfg.model.dtype != "float32"),
                                 (f"float32 trained tensors, not {'/'.join(low)}", low)) if bad]
        if fp32:  # 16-bit trained tensors: AdamW's state and eps underflow whatever the lr, so say that first
            tries.insert(1 if not low else 0, f"fp32 instead of 16-bit ({', '.join(fp32)}{again})")
        if cfg.optim.max_grad_norm is None:
            tries.append(f"gradient clipping (optim.max_grad_norm=1.0{again})")
        if skippable and self.can_skip:
            notes = ([f"{self.skipped} skipped already"] if self.budget else []) + \
                (["it may change on --resume"] if newest is not None else [])
            more = "a larger optim.skip_nonfinite" if self.budget else "optim.skip_nonfinite=N to skip up to N such steps"
            tries.append(more + (f" ({'; '.join(notes)})" if notes else ""))
        advice = tries[0] if len(tries) == 1 else ", ".join(tries[:-1]) + " or " + tries[-1]
        saved = f"newest checkpoint: {newest}" if newest is not None else "no checkpoint was written yet"
        return everywhere(NonFiniteError(f"step {step}: {what}; the run stopped without saving this step ({saved}). Try {advice}"))
