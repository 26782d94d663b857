"""The `bone train` recipe: setup() -> run() (evaluate, train, evaluate), on Hugging Face Accelerate.

The same code runs one CPU process, or N processes (DDP) under `accelerate launch -m bone train ...`
or `torchrun -m bone train ...`, FSDP2 (`fsdp_version: 2` in the Accelerate config) and DeepSpeed
ZeRO 1-3 (`distributed_type: DEEPSPEED`): checkpoints then gather the sharded trained tensors and
AdamW state (see sharded.py) into the single-process layout. launch.py makes the Accelerator.

What is trained comes from the method (`bone.methods.get(cfg.method)`: apply, trainable, save,
read_trained, label), what differs between model families from `bone.models.family_of_model`
(prepare, gradient checkpointing), and where everything is written from `RunDir`.

Loss: each optimizer step sums token cross-entropy over every supervised token of the global batch
(all micro-batches of all processes) and divides by their global count, so the gradient is the
same whatever the split into processes and accumulation steps. Models that take `logits_to_keep`
(Hugging Face causal LMs, bone's RWKV) compute logits only at the scored positions
(`bone.loss.scored_mask`): prompt and padding positions skip the output head and its softmax.

Failures agree across processes: a non-finite step (guard.py) is found from all-reduced values, and
a write that fails on one process (a full disk) is raised on every process, so none waits forever.
"""
from __future__ import annotations

import inspect
import shlex
import shutil
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate.utils import DistributedType, set_seed

from .. import fs, methods
from ..config import to_torch_dtype
from ..data import collate, load_records, to_examples, tokenize_examples
from ..errors import ConfigError, UsageError, require
from ..eval import eval_data, evaluate, write_results
from ..loss import next_token_loss, scored_mask, supervised_tokens
from ..models import family_of_model, load_model, load_tokenizer
from ..options import render_yaml
from . import checkpoint as ckpt
from . import collective, launch, optim, sharded
from .config import TrainConfig
from .guard import NonFiniteGuard
from .monitor import Monitor, plot_loss
from .rundir import RunDir
from .sampler import BatchPlan

STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # signal -> exit status after a clean stop


def _count(m: dict) -> str:
    return f" ({m['correct']}/{m['n']})" if "correct" in m else ""


class Trainer:
    """One training run. `resume`: None, "latest" or a checkpoint / run folder."""

    def __init__(self, cfg: TrainConfig, *, resume: str | None = None, overwrite: bool = False):
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: pick one")
        self.cfg, self.resume, self.overwrite = cfg, resume, overwrite
        self.run_dir = RunDir(Path(cfg.output_dir))
        self.method = methods.get(cfg.method)
        self.method.require()  # a missing optional package (e.g. PEFT for lora) fails before any loading
        self.stop_signal: int | None = None
        # set by setup()
        self.acc = None  # accelerate.Accelerator
        self.is_main = False
        self.resume_from: Path | None = None
        self.tokenizer = None
        self.train_set = None  # TokenizedDataset
        self.eval_set = None  # what bone.eval.evaluate reads (None without data.eval)
        self.plan: BatchPlan | None = None
        self.total_steps = 0
        self.model = self.optimizer = self.scheduler = None
        self.bare = None  # the model without the launch's wrapper (launch.unwrap)
        self.params: list[torch.nn.Parameter] = []
        self.scores_only = False  # the model takes logits_to_keep: logits only where the loss looks
        self.guard: NonFiniteGuard | None = None
        # position: optimizer steps done, epoch, step within the epoch, tokens seen
        self.step = self.epoch = self.pos = self.tokens_seen = 0
        self.loss_plot: Path | None = None  # written at the end when logging.plot

    # ---------------------------------------------------------------- setup
    def setup(self) -> "Trainer":
        self.acc = launch.make_accelerator(self.cfg)
        self.is_main = self.acc.is_main_process
        self.resume_from = self.run_dir.resume_point(self.resume, self.overwrite)  # checks the folder before any heavy work
        if self.cfg.logging.plot:  # needed at the very end: refuse now rather than after training
            require("matplotlib", 'pip install "bone[train]", or set logging.plot=false', "logging.plot (loss.png)")
        self.acc.wait_for_everyone()  # every process has looked before the main one writes there
        set_seed(self.cfg.schedule.seed)
        self._setup_data()
        self._setup_model()
        self._setup_optim()
        if self.resume_from is not None:
            self._restore(self.resume_from)
        collective.write(self.is_main, [self._prepare_folder] if self.is_main else [])
        self._report_setup()
        return self

    def _prepare_folder(self) -> None:
        """Main process: --overwrite deletes the old run; temporaries of a killed run's writes are removed; config.yaml."""
        if self.resume_from is None and self.overwrite and self.run_dir.root.exists():
            shutil.rmtree(self.run_dir.root)
        self.run_dir.remove_stale()
        if not self.run_dir.config.is_file():  # a fresh run, or one resumed into a new folder
            self.run_dir.root.mkdir(parents=True, exist_ok=True)
            fs.write_text(self.run_dir.config, render_yaml(self.cfg) + "\n")

    def _setup_data(self) -> None:
        """Records, tokenizer, tokenized training (and evaluation) data, and the batch plan."""
        cfg, d = self.cfg, self.cfg.data
        train_records = load_records(d.train, split=d.train_split, limit=d.train_limit)
        eval_records = load_records(d.eval, split=d.eval_split, limit=d.eval_limit) if d.eval else None
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path)
        examples = to_examples(train_records, source=f"data.train {d.train}", **d.fields())
        self.train_set = tokenize_examples(examples, self.tokenizer, template=d.template, max_length=d.max_length,
                                           packing=d.packing)
        if eval_records is not None:
            self.eval_set = eval_data(eval_records, self.tokenizer, metric=cfg.eval.metric, template=d.template,
                                      fields=d.fields(held_out=True), max_length=d.max_length,
                                      source=f"data.eval {d.eval}")
        s, acc = cfg.schedule, self.acc
        self.plan = BatchPlan(len(self.train_set), s.batch_size, s.grad_accum, acc.num_processes, acc.process_index, s.seed)
        self.total_steps = self.plan.steps_per_epoch * s.epochs
        if s.max_steps is not None:
            self.total_steps = min(self.total_steps, s.max_steps)

    def _setup_model(self) -> None:
        """The base model, checked against the tokenizer by its family, with the method applied."""
        cfg = self.cfg
        model = load_model(cfg.model.path, dtype=to_torch_dtype(cfg.model.dtype), quantize=cfg.model.quant())
        family = family_of_model(model)
        family.prepare(model, self.tokenizer)
        self.scores_only = "logits_to_keep" in inspect.signature(model.forward).parameters
        model = self.method.apply(model, cfg)
        if cfg.model.gradient_checkpointing:
            family.enable_gradient_checkpointing(model)
        model.train()
        self.model = model

    def _setup_optim(self) -> None:
        """AdamW over the method's trainable parameters (in the method's parameter groups, each naming its
        parameters under "names"), the lr schedule, and Accelerate's prepare."""
        acc = self.acc
        # the scheduler is stepped by hand once per optimizer step (not prepared: Accelerate would step it per process)
        # fused AdamW on one process or DDP; DeepSpeed and FSDP2 wrap or reshard the parameters it would hold
        can_fuse = acc.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        optimizer, self.scheduler = optim.build(self.method, self.model, self.cfg, self.total_steps, can_fuse=can_fuse)
        if acc.distributed_type == DistributedType.DEEPSPEED:
            launch.fill_deepspeed_config(acc, self.cfg)
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        self.bare = launch.unwrap(acc, self.model)
        named = self.method.trainable(self.bare)  # FSDP2 replaced the parameters by DTensor shards
        self.params = [p for _, p in named]
        self.guard = NonFiniteGuard(acc, named, self.cfg, self.run_dir,
                                    can_skip=acc.distributed_type != DistributedType.DEEPSPEED)

    def _restore(self, path: Path) -> None:
        state, model = ckpt.read_resumable(path, self.cfg, self.plan.global_batch), self.bare
        optimizer_state = ckpt.load_torch(path / ckpt.OPTIMIZER, ckpt.OPTIMIZER_KEYS)
        scheduler_state = ckpt.load_torch(path / ckpt.SCHEDULER, ckpt.SCHEDULER_KEYS)
        sharded.load_trained(model, self.method, path / ckpt.ADAPTER)
        sharded.load_optimizer_state(model, self.method, self.optimizer.optimizer, optimizer_state)
        self.scheduler.load_state_dict(scheduler_state)
        if state.get("world_size", self.acc.num_processes) == self.acc.num_processes:
            ckpt.set_rng_state(ckpt.load_rank(path, self.acc.process_index))
        else:  # data order and gradients still continue exactly; only random draws (dropout) start afresh
            set_seed(self.cfg.schedule.seed + state["step"], device_specific=True)
            if self.is_main:
                print(f"note: {path} was saved by {state['world_size']} process(es), this launch has "
                      f"{self.acc.num_processes}: RNG streams (dropout masks) are re-seeded", flush=True)
        self.step, self.epoch, self.pos, self.tokens_seen = state["step"], state["epoch"], state["pos"], state["tokens"]
        self.guard.skipped = state.get("skipped", 0)

    def _report_setup(self) -> None:
        if not self.is_main:
            return
        st, cfg = self.train_set.stats, self.cfg
        n_params = sum(getattr(p, "ds_numel", p.numel()) for p in self.params)  # ZeRO-3 leaves placeholders
        print(
            f"bone train: {cfg.model.path} + {self.method.label(cfg)}: "
            f"{len(self.params)} trainable tensors, {n_params:,} trainable parameters\n"
            f"data: {st['kept']} examples ({st['truncated']} truncated to {cfg.data.max_length} tokens, "
            f"{st['dropped']} dropped) in {st['rows']} {'packed ' if cfg.data.packing else ''}rows, "
            f"{st['supervised_tokens']:,} supervised tokens\n"
            f"steps: {self.total_steps} (global batch {self.plan.global_batch} on {self.acc.num_processes} process(es), "
            f"{launch.describe(self.acc, self.model)})"
            + (f", resuming at step {self.step} from {self.resume_from}" if self.resume_from else ""),
            flush=True,
        )
        for line in self.method.notes(self.bare, cfg):
            print(line, flush=True)

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
            key = self.cfg.eval.metric
            if before is not None:
                print(f"held-out {key} before training: {before[key]:.4f}" + _count(before))
            if after is not None:
                print(f"held-out {key} after training:  {after[key]:.4f}" + _count(after))
            print(f"adapter: {self.run_dir.adapter}")
            if self.loss_plot is not None:
                print(f"loss plot: {self.loss_plot}")
            print(f"metrics: {self.run_dir.metrics}", flush=True)
        return 0

    def _discard_unsaved_run(self) -> None:
        """A fresh run that fails before its first checkpoint leaves no run folder behind."""
        if self.is_main and self.resume_from is None and not self.run_dir.list_checkpoints():
            shutil.rmtree(self.run_dir.root, ignore_errors=True)

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

    def _micro_batches(self, order) -> list[dict]:
        """This process's micro-batches of the next optimizer step, on its device."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        idx = self.plan.micro_batches(self.epoch, self.pos, order)
        return [{k: v.to(self.acc.device) for k, v in collate([self.train_set[i] for i in b], pad).items()} for b in idx]

    def _train_step(self, batches: list[dict]) -> dict:
        """One optimizer step over this process's micro-batches: {"loss" (per supervised token of the
        global batch), "lr", "tokens" (of the global batch), "grad_norm" (None without clipping),
        "skipped" (a non-finite step skipped, see guard.py)}. Raises NonFiniteError to stop the run."""
        acc, world, device, step = self.acc, self.acc.num_processes, self.acc.device, self.step + 1
        self.guard.check_update(step, self.optimizer.param_groups)
        local = torch.tensor([float(sum(supervised_tokens(b["labels"]) for b in batches)),
                              float(sum(b["attention_mask"].sum() for b in batches))], device=device)
        supervised, tokens = acc.reduce(local, reduction="sum").tolist()
        loss_sum = torch.zeros((), device=device)
        for batch in batches:  # accumulate(): gradients sync (and DeepSpeed steps) on the last micro-batch
            with acc.accumulate(self.model):
                part = self._loss_sum(batch)
                # backward divides by the accumulation count and DDP/FSDP/ZeRO average over processes
                acc.backward(part * world * len(batches) / max(supervised, 1.0))
            loss_sum += part.detach()
        max_norm = self.cfg.optim.max_grad_norm
        grad_norm = acc.clip_grad_norm_(self.params, max_norm) if max_norm else None
        loss, skip = self.guard.check_step(step, loss_sum, supervised, grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if not skip:
            self.optimizer.step()  # a no-op under DeepSpeed, whose engine stepped in backward()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not skip:
            self.guard.check_params(step)
        return {"loss": loss, "lr": lr, "tokens": tokens, "grad_norm": grad_norm, "skipped": skip}

    def _loss_sum(self, batch: dict) -> torch.Tensor:
        """The summed next-token loss of one micro-batch (see the module docstring)."""
        ids, labels = batch["input_ids"], batch["labels"]
        if not self.scores_only:
            return next_token_loss(self.model(input_ids=ids).logits, labels, "sum")
        logits = self.model(input_ids=ids, logits_to_keep=scored_mask(labels)).logits
        return next_token_loss(logits, labels, "sum", scored=logits.dim() == 2)  # 3-D: the model kept every position

    def _loop(self, stop_at: int | None) -> int:
        cfg = self.cfg
        monitor = Monitor(self.run_dir, self.total_steps, self.step, progress=cfg.logging.progress,
                          tensorboard=cfg.logging.tensorboard) if self.is_main else None
        try:
            code = self._steps(stop_at, monitor)
        except BaseException:
            if monitor is not None:
                monitor.close()  # what failed in the loop is the error to report
            raise
        collective.raise_everywhere(monitor.close() if monitor is not None else None)
        return code

    def _log(self, monitor: Monitor, done: dict, rate: float) -> OSError | None:
        """Progress and (every logging.every steps) a metrics row; returns a failed write's error."""
        monitor.advance(done["loss"], done["lr"], rate)
        if self.step % self.cfg.logging.every and self.step != self.total_steps:
            return None
        row = {"epoch": self.epoch, "loss": done["loss"], "lr": done["lr"], "tokens": self.tokens_seen, "tokens_per_s": rate}
        if done["grad_norm"] is not None:
            row["grad_norm"] = float(sharded.full(done["grad_norm"]))
        if self.cfg.optim.skip_nonfinite:
            row["skipped_steps"] = self.guard.skipped  # non-finite steps skipped so far (this one: loss null)
        try:
            monitor.log(self.step, row)
        except OSError as err:
            return err
        return None

    def _steps(self, stop_at: int | None, monitor: Monitor | None) -> int:
        cfg, plan = self.cfg, self.plan
        order, t0, tokens_run, last_saved = plan.order(self.epoch), time.perf_counter(), 0, None
        while self.step < self.total_steps:
            if self.pos == plan.steps_per_epoch:
                self.epoch, self.pos = self.epoch + 1, 0
                order = plan.order(self.epoch)
            done = self._train_step(self._micro_batches(order))
            self.step, self.pos = self.step + 1, self.pos + 1
            self.tokens_seen += int(done["tokens"])
            tokens_run += done["tokens"]
            failed = self._log(monitor, done, tokens_run / max(time.perf_counter() - t0, 1e-9)) if monitor else None
            stop = self._stop_everywhere(self.step == stop_at, failed)
            if stop or self.step % cfg.checkpointing.every == 0 or self.step == self.total_steps:
                last_saved = self.save_checkpoint()
            if stop:
                if monitor is not None:
                    monitor.close()
                    why = signal.Signals(self.stop_signal).name if self.stop_signal else f"stop_at={stop_at}"
                    print(f"stopped by {why} after step {self.step}; checkpoint {last_saved}\n"
                          f"continue with: bone train --resume {shlex.quote(str(self.run_dir.root))}", flush=True)
                return STOP_SIGNALS.get(self.stop_signal, 0) if self.stop_signal else 0
        self.save_adapter()
        return 0

    def _stop_everywhere(self, here: bool, failed: OSError | None = None) -> bool:
        """True on every process as soon as any process got a stop signal (or reached stop_at); a write
        that failed on any process (`failed`) is raised on every process."""
        flags = torch.tensor([float(here or self.stop_signal is not None), float(failed is not None)], device=self.acc.device)
        stop, fail = self.acc.reduce(flags, reduction="sum").tolist()
        if fail:
            collective.raise_everywhere(failed)
        return stop > 0

    # ---------------------------------------------------------------- save
    def save_checkpoint(self) -> Path:
        """Write the checkpoint of this step atomically (all processes take part; main writes the shared files)."""
        acc, model, final, main = self.acc, self.bare, self.run_dir.step(self.step), self.is_main
        tmp = collective.make_dir(main, final, lambda: ckpt.begin(self.run_dir, self.step))
        state = {"step": self.step, "epoch": self.epoch, "pos": self.pos, "tokens": self.tokens_seen, "skipped": self.guard.skipped,
                 "global_batch": self.plan.global_batch, "world_size": acc.num_processes}
        optimizer = {}
        collective.write(main, [
            lambda: ckpt.write_rank(tmp, acc.process_index),
            lambda: sharded.save_trained(model, self.method, tmp / ckpt.ADAPTER, main),  # collective when sharded
            lambda: optimizer.update(sharded.optimizer_state(model, self.method, self.optimizer.optimizer)),  # likewise
            *([lambda: ckpt.write_main(tmp, optimizer, self.scheduler, state, render_yaml(self.cfg) + "\n")] if main else []),
        ], tmp, final)
        if main:
            ckpt.commit(tmp, self.run_dir, self.step, self.cfg.checkpointing.keep)
        acc.wait_for_everyone()
        return final

    def save_adapter(self) -> Path:
        """The trained result at RunDir.adapter (the method's save; Bone: a PEFT directory), and loss.png."""
        final, main = self.run_dir.adapter, self.is_main
        tmp = collective.make_dir(main, final, lambda: fs.make_temp_dir(final))
        collective.write(main, [lambda: sharded.save_trained(self.bare, self.method, tmp, main)], tmp, final)  # collective when sharded
        if main:
            fs.replace_dir(tmp, final)
        collective.write(main, [self._plot] if main and self.cfg.logging.plot else [])  # also: everyone waits for main
        return final

    def _plot(self) -> None:
        if self.run_dir.metrics.exists():
            self.loss_plot = plot_loss(self.run_dir.metrics, self.run_dir.loss_plot)

    # ---------------------------------------------------------------- evaluate
    def evaluate(self, tag: str) -> dict | None:
        """Evaluate on data.eval before (step 0) or after training; main process; results in RunDir.eval(tag)."""
        if self.eval_set is None:
            return None
        if 0 < self.step < self.total_steps:
            raise UsageError("evaluate() runs before training starts or after it ends")
        if sharded.is_partitioned(self.bare):
            if self.is_main:
                print(f"held-out evaluation ({tag}) is skipped under FSDP / ZeRO-3 (the model is split across processes); "
                      f"run: bone eval --model {self.cfg.model.path} --adapter {self.run_dir.adapter} --data {self.cfg.data.eval} ...",
                      flush=True)
            return None
        metrics = None
        if self.is_main:
            model, e = self.bare, self.cfg.eval
            model.eval()
            if self.step >= self.total_steps:
                self.method.fold(model)  # training is over and its result saved
            with torch.no_grad(), self.method.base_outputs(model) if self.step == 0 else nullcontext():
                metrics, preds = evaluate(model, self.tokenizer, self.eval_set, metric=e.metric,
                                          template=self.cfg.data.template, batch_size=e.batch_size,
                                          max_new_tokens=e.max_new_tokens)
            model.train()
        collective.write(self.is_main, [lambda: write_results(self.run_dir.eval(tag), metrics, preds)] if self.is_main else [])
        return metrics

