"""The `bone train` recipe: setup() -> train() -> evaluate(), on Hugging Face Accelerate.

The same code runs one CPU process, or N processes (DDP) under `accelerate launch -m bone train ...`
or `torchrun -m bone train ...`, FSDP2 (`fsdp_version: 2` in the Accelerate config) and DeepSpeed
ZeRO 1-3 (`distributed_type: DEEPSPEED`): checkpoints then gather the sharded adapter blocks and
AdamW state (see sharded.py) into the single-process layout. launch.py makes the Accelerator.

Loss: each optimizer step sums token cross-entropy over every supervised token of the global batch
(all micro-batches of all processes) and divides by their global count, so the gradient is the
same whatever the split into processes and accumulation steps.
"""
from __future__ import annotations

import math
import shutil
import signal
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import apply, disabled, merge, trainable_parameters
from ..config import to_torch_dtype
from ..errors import ConfigError
from ..options import render_yaml
from . import checkpoint as ckpt
from . import launch, sharded
from .config import TrainConfig, load_config
from .monitor import Monitor, plot_loss
from .sampler import BatchPlan

STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # signal -> exit status after a clean stop


def lr_factor(step: int, *, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based): linear warmup, then decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else max(0.0, 1.0 - progress)


def token_loss_sum(model, batch: dict) -> torch.Tensor:
    """Sum of next-token cross-entropy over supervised positions (labels != -100); fp32 scalar."""
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")


def enable_gradient_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing (HF models take kwargs; RWKV models take none)."""
    if getattr(model.config, "model_type", "").startswith("rwkv"):
        model.gradient_checkpointing_enable()
    elif hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _count(m: dict) -> str:
    return f" ({m['correct']}/{m['n']})" if "correct" in m else ""


class Trainer:
    """One training run. `resume`: None, "latest" or a checkpoint / run folder."""

    def __init__(self, cfg: TrainConfig, *, resume: str | None = None, overwrite: bool = False):
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: pick one")
        self.cfg, self.resume, self.overwrite = cfg, resume, overwrite
        self.out = Path(cfg.output_dir)
        self.stop_signal: int | None = None

    # ---------------------------------------------------------------- setup
    def setup(self) -> "Trainer":
        from accelerate.utils import set_seed

        from ..data import load_records, to_examples, tokenize_examples
        from ..models import load_model, load_tokenizer

        cfg = self.cfg
        self.acc = acc = launch.make_accelerator(cfg)
        self.is_main = acc.is_main_process
        self.resume_from = self._resolve_resume()  # checks the output folder before any heavy work
        acc.wait_for_everyone()  # every process has looked before the main one writes there
        set_seed(cfg.schedule.seed)
        d = cfg.data
        fields = dict(prompt_field=d.prompt_field, response_field=d.response_field, messages_field=d.messages_field)
        train_records = load_records(d.train, split=d.train_split, limit=d.train_limit)
        self.eval_records = load_records(d.eval, split=d.eval_split, limit=d.eval_limit) if d.eval else None
        model = load_model(cfg.model.path, dtype=to_torch_dtype(cfg.model.dtype))
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path)
        if getattr(model.config, "model_type", "").startswith("rwkv"):
            from ..models.rwkv import check_vocab

            check_vocab(model, self.tokenizer)
        apply(model, cfg.bone)
        if cfg.model.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        tok_args = dict(template=d.template, max_length=d.max_length)
        self.train_set = tokenize_examples(to_examples(train_records, **fields), self.tokenizer, packing=d.packing, **tok_args)
        self.eval_set = None
        if self.eval_records is not None and cfg.eval.metric == "loss":
            self.eval_set = tokenize_examples(to_examples(self.eval_records, **fields), self.tokenizer, **tok_args)
        s = cfg.schedule
        self.plan = BatchPlan(len(self.train_set), s.batch_size, s.grad_accum, acc.num_processes, acc.process_index, s.seed)
        self.total_steps = self.plan.steps_per_epoch * s.epochs
        if s.max_steps is not None:
            self.total_steps = min(self.total_steps, s.max_steps)
        self.params = trainable_parameters(model)
        o = cfg.optim
        optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
        # the scheduler is stepped by hand once per optimizer step (not prepared: Accelerate would step it per process)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(lr_factor, warmup=s.warmup_steps, total=self.total_steps, kind=s.scheduler)
        )
        if acc.distributed_type.name == "DEEPSPEED":
            launch.fill_deepspeed_config(acc, cfg)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.params = trainable_parameters(acc.unwrap_model(self.model))  # FSDP2 replaced them by DTensor shards
        self.step, self.epoch, self.pos, self.tokens_seen = 0, 0, 0, 0
        if self.resume_from is not None:
            self._restore(self.resume_from)
        elif self.is_main and self.overwrite and self.out.exists():
            shutil.rmtree(self.out)
        if self.is_main and not (self.out / "config.yaml").is_file():  # a fresh run, or one resumed into a new folder
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(render_yaml(cfg) + "\n")
        acc.wait_for_everyone()
        self._report_setup()
        return self

    def _resolve_resume(self) -> Path | None:
        """The checkpoint to resume from, after checking the output folder; errors before any work."""
        root = self.out / "checkpoints"
        if self.resume is None:
            if self.out.exists() and any(self.out.iterdir()):
                if not self.overwrite:
                    raise FileExistsError(
                        f"output_dir {str(self.out)!r} already exists and is not empty. Continue that run with --resume, "
                        f"pick another output_dir=..., or pass --overwrite to delete it first"
                    )
                if not (self.out / "config.yaml").is_file() and not root.is_dir():
                    raise FileExistsError(f"--overwrite refuses to delete {str(self.out)!r}: it does not look like a bone run folder")
            return None
        path = Path(self.resume) if self.resume != "latest" else root
        if (path / "state.json").is_file():
            found = path
        else:
            if (path / "checkpoints").is_dir():
                path = path / "checkpoints"
            found = ckpt.latest(path)
            if found is None:
                raise FileNotFoundError(f"nothing to resume: no complete checkpoint under {str(path)!r}")
        own_run = found.resolve().parent.parent == self.out.resolve()
        if not own_run and self.out.exists() and any(self.out.iterdir()):
            raise FileExistsError(f"--resume {found} continues into output_dir {str(self.out)!r}, which already holds "
                                  f"another run: pick a new output_dir=... (or resume that run's own checkpoints)")
        return found

    def _restore(self, path: Path) -> None:
        saved = load_config(path / "config.yaml")
        a, b = saved.run_defining(), self.cfg.run_defining()
        if a != b:
            diff = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]
            raise ConfigError(f"cannot resume {path}: the config differs from the checkpoint's in {diff}")
        state = ckpt.read_state(path)
        if state["global_batch"] != self.plan.global_batch:
            raise ConfigError(
                f"cannot resume {path}: global batch {state['global_batch']} was saved, this launch has "
                f"{self.plan.global_batch} (same batch_size x grad_accum x processes needed)"
            )
        model = self.acc.unwrap_model(self.model)
        sharded.load_blocks(model, path / "adapter")
        sharded.load_optimizer_state(model, self.optimizer.optimizer, ckpt.load_torch(path / "optimizer.pt"))
        self.scheduler.load_state_dict(ckpt.load_torch(path / "scheduler.pt"))
        if state.get("world_size", self.acc.num_processes) == self.acc.num_processes:
            ckpt.set_rng_state(ckpt.load_rank(path, self.acc.process_index))
        else:  # data order and gradients still continue exactly; only random draws (dropout) start afresh
            from accelerate.utils import set_seed

            set_seed(self.cfg.schedule.seed + state["step"], device_specific=True)
            if self.is_main:
                print(f"note: {path} was saved by {state['world_size']} process(es), this launch has "
                      f"{self.acc.num_processes}: RNG streams (dropout masks) are re-seeded", flush=True)
        self.step, self.epoch, self.pos, self.tokens_seen = state["step"], state["epoch"], state["pos"], state["tokens"]

    def _report_setup(self) -> None:
        if not self.is_main:
            return
        st = self.train_set.stats
        n_params = sum(getattr(p, "ds_numel", p.numel()) for p in self.params)  # ZeRO-3 leaves placeholders
        print(
            f"bone train: {self.cfg.model.path} + Bone-{self.cfg.bone.variant} r={self.cfg.bone.r}: "
            f"{len(self.params)} adapted layers, {n_params:,} trainable parameters\n"
            f"data: {st['kept']} examples ({st['truncated']} truncated to {self.cfg.data.max_length} tokens, "
            f"{st['dropped']} dropped) in {st['rows']} {'packed ' if self.cfg.data.packing else ''}rows, "
            f"{st['supervised_tokens']:,} supervised tokens\n"
            f"steps: {self.total_steps} (global batch {self.plan.global_batch} on {self.acc.num_processes} process(es), "
            f"{launch.describe(self.acc, self.model)})"
            + (f", resuming at step {self.step} from {self.resume_from}" if self.resume_from else ""),
            flush=True,
        )

    # ---------------------------------------------------------------- run
    def run(self, stop_at: int | None = None) -> int:
        """Evaluate before (fresh runs, when asked), train, evaluate after; print where everything is."""
        try:
            before = self.evaluate("before") if self.cfg.eval.before and self.step == 0 else None
            code = self.train(stop_at)
        except BaseException:
            self._discard_unsaved_run()
            raise
        if code != 0 or self.step < self.total_steps:
            return code
        after = self.evaluate("after") if self.cfg.eval.after else None
        if self.is_main:
            key = "accuracy" if self.cfg.eval.metric == "accuracy" else "loss"
            if before is not None:
                print(f"held-out {key} before training: {before[key]:.4f}" + _count(before))
            if after is not None:
                print(f"held-out {key} after training:  {after[key]:.4f}" + _count(after))
            print(f"adapter: {self.out / 'adapter'}")
            if getattr(self, "loss_plot", None) is not None:
                print(f"loss plot: {self.loss_plot}")
            print(f"metrics: {self.out / 'metrics.jsonl'}", flush=True)
        return 0

    def _discard_unsaved_run(self) -> None:
        """A fresh run that fails before its first checkpoint leaves no run folder behind."""
        if self.is_main and self.resume_from is None and not ckpt.list_checkpoints(self.out / "checkpoints"):
            shutil.rmtree(self.out, ignore_errors=True)

    # ---------------------------------------------------------------- train
    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def train(self, stop_at: int | None = None) -> int:
        """Run to the end (or to step `stop_at`, or a SIGINT/SIGTERM): returns 0, or 130/143 when stopped early.

        An early stop saves a checkpoint that `--resume` continues exactly."""
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            return self._loop(stop_at)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _loop(self, stop_at: int | None) -> int:
        from ..data import collate

        acc, cfg, plan = self.acc, self.cfg, self.plan
        world, device = acc.num_processes, acc.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        monitor = Monitor(self.out, self.total_steps, self.step, progress=cfg.logging.progress and self.is_main,
                          tensorboard=cfg.logging.tensorboard) if self.is_main else None
        order, t0, tokens_run, last_saved = plan.order(self.epoch), time.perf_counter(), 0, None
        while self.step < self.total_steps:
            if self.pos == plan.steps_per_epoch:
                self.epoch, self.pos = self.epoch + 1, 0
                order = plan.order(self.epoch)
            batches = [collate([self.train_set[i] for i in idx], pad) for idx in plan.micro_batches(self.epoch, self.pos, order)]
            batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
            local = torch.tensor([float(sum((b["labels"][:, 1:] != -100).sum() for b in batches)),
                                  float(sum(b["attention_mask"].sum() for b in batches))], device=device)
            supervised, tokens = acc.reduce(local, reduction="sum").tolist()
            loss_sum = torch.zeros((), device=device)
            for batch in batches:  # accumulate(): gradients sync (and DeepSpeed steps) on the last micro-batch
                with acc.accumulate(self.model):
                    part = token_loss_sum(self.model, batch)
                    # backward divides by the accumulation count and DDP/FSDP/ZeRO average over processes
                    acc.backward(part * world * len(batches) / max(supervised, 1.0))
                loss_sum += part.detach()
            grad_norm = acc.clip_grad_norm_(self.params, cfg.optim.max_grad_norm) if cfg.optim.max_grad_norm else None
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()  # a no-op under DeepSpeed, whose engine stepped in backward()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step, self.pos = self.step + 1, self.pos + 1
            self.tokens_seen += int(tokens)
            tokens_run += tokens
            loss = acc.reduce(loss_sum, reduction="sum").item() / max(supervised, 1.0)
            if monitor is not None:
                rate = tokens_run / max(time.perf_counter() - t0, 1e-9)
                monitor.advance(loss, lr, rate)
                if self.step % cfg.logging.every == 0 or self.step == self.total_steps:
                    row = {"epoch": self.epoch, "loss": loss, "lr": lr, "tokens": self.tokens_seen, "tokens_per_s": rate}
                    if grad_norm is not None:
                        row["grad_norm"] = float(sharded.full(grad_norm))
                    monitor.log(self.step, row)
            stop = self._stop_everywhere(self.step == stop_at)
            if stop or self.step % cfg.checkpointing.every == 0 or self.step == self.total_steps:
                last_saved = self.save_checkpoint()
            if stop:
                if monitor is not None:
                    monitor.close()
                    why = signal.Signals(self.stop_signal).name if self.stop_signal else f"stop_at={stop_at}"
                    print(f"stopped by {why} after step {self.step}; checkpoint {last_saved}\n"
                          f"continue with: bone train <config> --resume", flush=True)
                return STOP_SIGNALS.get(self.stop_signal, 0) if self.stop_signal else 0
        if monitor is not None:
            monitor.close()
        self.save_adapter()
        return 0

    def _stop_everywhere(self, here: bool) -> bool:
        """True on every process as soon as any process got a stop signal (or reached stop_at)."""
        flag = torch.tensor([1.0 if (here or self.stop_signal is not None) else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(flag, reduction="sum").item() > 0)

    # ---------------------------------------------------------------- save
    def save_checkpoint(self) -> Path:
        """Write checkpoints/step-N atomically (all processes take part; main writes the shared files)."""
        acc, root = self.acc, self.out / "checkpoints"
        if self.is_main:
            ckpt.begin(root, self.step)
        acc.wait_for_everyone()
        tmp = root / f".{ckpt.STEP_PREFIX}{self.step:06d}.tmp"
        ckpt.write_rank(tmp, acc.process_index)
        final = ckpt.step_dir(root, self.step)
        model = acc.unwrap_model(self.model)
        sharded.save_adapter(model, tmp / "adapter", self.is_main)  # collective when sharded
        optimizer_state = sharded.optimizer_state(model, self.optimizer.optimizer)  # collective when sharded
        if self.is_main:
            state = {"step": self.step, "epoch": self.epoch, "pos": self.pos, "tokens": self.tokens_seen,
                     "global_batch": self.plan.global_batch, "world_size": acc.num_processes}
            ckpt.write_main(tmp, optimizer_state, self.scheduler, state, render_yaml(self.cfg) + "\n")
        acc.wait_for_everyone()
        if self.is_main:
            ckpt.commit(tmp, root, self.step, self.cfg.checkpointing.keep)
        acc.wait_for_everyone()
        return final

    def save_adapter(self) -> Path:
        """The final adapter at <output_dir>/adapter (a bone.save / PEFT directory), and loss.png."""
        final, tmp = self.out / "adapter", self.out / ".adapter.tmp"
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        sharded.save_adapter(self.acc.unwrap_model(self.model), tmp, self.is_main)  # collective when sharded
        if self.is_main:
            if final.exists():
                shutil.rmtree(final)
            tmp.replace(final)
            if self.cfg.logging.plot and (self.out / "metrics.jsonl").exists():
                self.loss_plot = plot_loss(self.out / "metrics.jsonl", self.out / "loss.png")
        self.acc.wait_for_everyone()
        return final

    # ---------------------------------------------------------------- evaluate
    def evaluate(self, tag: str) -> dict | None:
        """Evaluate on data.eval before (step 0) or after training; main process; results in eval/<tag>/."""
        if self.eval_records is None:
            return None
        if 0 < self.step < self.total_steps:
            raise RuntimeError("evaluate() runs before training starts or after it ends")
        if sharded.is_partitioned(self.acc.unwrap_model(self.model)):
            if self.is_main:
                print(f"held-out evaluation ({tag}) is skipped under FSDP / ZeRO-3 (the model is split across processes); "
                      f"run: bone eval --model {self.cfg.model.path} --adapter {self.out / 'adapter'} --data {self.cfg.data.eval} ...",
                      flush=True)
            return None
        metrics = None
        if self.is_main:
            from ..eval import gsm8k_eval, loss_eval, write_results

            model, e = self.acc.unwrap_model(self.model), self.cfg.eval
            model.eval()
            if self.step >= self.total_steps:
                merge(model)  # training is over (adapter saved): fold it in, so generation runs at base-model speed
            # before training the adapter is zero, so the base model gives the same outputs without its weight rebuild
            with torch.no_grad(), disabled(model) if self.step == 0 else nullcontext():
                if e.metric == "accuracy":
                    metrics, preds = gsm8k_eval(model, self.tokenizer, self.eval_records, template=self.cfg.data.template,
                                                batch_size=e.batch_size, max_new_tokens=e.max_new_tokens)
                else:
                    metrics, preds = loss_eval(model, self.eval_set, batch_size=e.batch_size), []
            model.train()
            write_results(self.out / "eval" / tag, metrics, preds)
        self.acc.wait_for_everyone()
        return metrics
