"""RunDir: the layout of a `bone train` output folder; nothing else spells these paths.

    <output_dir>/
      config.yaml            the run's TrainConfig, written when the run starts
      checkpoints/step-N/    resumable checkpoints, complete once they hold state.json (checkpoint.py)
      adapter/               the trained result (the method's save: a PEFT-layout folder for Bone)
      eval/<tag>/            results.json and predictions.jsonl of the evaluation before / after training
      metrics.jsonl          one JSON line per logged optimizer step
      loss.png               the training-loss curve
      tensorboard/           TensorBoard events (when tensorboard is installed)
      timing.jsonl           one line per training session run by `bone compare` (steps, seconds, peak memory)

Importing this module does not import torch (the command line finds a run's config with it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import fs
from ..errors import MissingPathError, OutputExistsError

CONFIG = "config.yaml"
STATE = "state.json"  # written last into a checkpoint: a step folder with it is complete
STEP_PREFIX = "step-"


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith(STEP_PREFIX) or not name[len(STEP_PREFIX):].isdigit():
        return None
    return int(name[len(STEP_PREFIX):])


def is_checkpoint(path: Path) -> bool:
    return (Path(path) / STATE).is_file()


def checkpoints_in(folder: Path) -> list[Path]:
    """The complete `step-N` checkpoints directly under `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.is_dir() and _step_of(p) is not None and is_checkpoint(p)]
    return sorted(done, key=_step_of)


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def timing(self) -> Path:
        return self.root / "timing.jsonl"

    def eval(self, tag: str) -> Path:
        return self.root / "eval" / tag

    def step(self, step: int) -> Path:
        """The checkpoint folder of optimizer step `step`."""
        return self.checkpoints / f"{STEP_PREFIX}{step:06d}"

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return checkpoints_in(self.checkpoints)

    def latest(self) -> Path | None:
        found = self.list_checkpoints()
        return found[-1] if found else None

    def is_empty(self) -> bool:
        """True when the folder does not exist or holds nothing."""
        return not self.root.exists() or not any(self.root.iterdir())

    def looks_like_run(self) -> bool:
        """True for a folder a bone run wrote (so --overwrite may delete it)."""
        return self.config.is_file() or self.checkpoints.is_dir()

    def remove_stale(self) -> list[Path]:
        """Delete the temporaries that killed writers left of this run's own files and folders (step
        checkpoints, adapter, config, metrics, plot, evaluation results); returns what was removed.
        Anything else, and the temporaries of writers still running, is kept (`bone.fs.remove_stale`)."""
        owned = [self.config, self.metrics, self.loss_plot, self.adapter]
        if (self.root / "eval").is_dir():
            owned += [p / name for p in (self.root / "eval").iterdir() for name in ("results.json", "predictions.jsonl")]
        if self.checkpoints.is_dir():
            targets = {fs.temp_target(p.name) for p in self.checkpoints.iterdir()}
            owned += [self.checkpoints / t for t in sorted(targets - {None}) if _step_of(Path(t)) is not None]
        return [removed for path in owned for removed in fs.remove_stale(path)]

    def holds(self, checkpoint: Path) -> bool:
        """True when `checkpoint` is one of this run's own checkpoints."""
        return Path(checkpoint).resolve().parent == self.checkpoints.resolve()

    def resume_point(self, resume: str | None, overwrite: bool) -> Path | None:
        """The checkpoint a run with `--resume RESUME` ("latest", a folder, or None) and `--overwrite`
        continues from (None: a fresh run), after checking this output folder; raises what to do instead."""
        out = str(self.root)
        if resume is None:
            if self.is_empty():
                return None
            if not self.looks_like_run():
                raise OutputExistsError(f"output_dir {out!r} already exists and does not look like a bone run folder "
                                        f"(--overwrite will not delete it): pick another output_dir=...")
            if not overwrite:
                if self.latest() is None:
                    raise OutputExistsError(f"output_dir {out!r} holds a run that stopped before its first checkpoint, so "
                                            f"there is nothing to resume: start it again with --overwrite, or pick another output_dir=...")
                raise OutputExistsError(f"output_dir {out!r} already exists and holds a run: continue it with --resume, pick another "
                                        f"output_dir=..., or pass --overwrite to delete it first")
            return None
        source = self if resume == "latest" else RunDir(resume)
        found = source.latest() if resume == "latest" else RunDir.find_checkpoint(resume)
        if found is None:
            where = str(source.root)
            if source.is_empty():
                raise MissingPathError(f"nothing to resume: {where!r} holds no run; start one without --resume")
            if source.looks_like_run():
                raise MissingPathError(f"nothing to resume: the run in {where!r} stopped before its first checkpoint; "
                                       f"start it again with --overwrite instead of --resume")
            raise MissingPathError(f"nothing to resume: no complete checkpoint under {where!r}")
        if not self.holds(found) and not self.is_empty():
            raise OutputExistsError(f"--resume {found} continues into output_dir {out!r}, which already holds "
                                    f"another run: pick a new output_dir=... (or resume that run's own checkpoints)")
        return found

    @staticmethod
    def find_checkpoint(path: str | Path) -> Path | None:
        """The checkpoint `--resume PATH` means: PATH itself (a checkpoint), else the newest one of
        the run folder or the checkpoints folder PATH; None when there is none."""
        path = Path(path)
        if is_checkpoint(path):
            return path
        run = RunDir(path)
        found = run.list_checkpoints() if run.checkpoints.is_dir() else checkpoints_in(path)
        return found[-1] if found else None

    @staticmethod
    def find_config(path: str | Path) -> Path | None:
        """The config.yaml of a run folder or checkpoint PATH (else of the checkpoint it resumes)."""
        path = Path(path)
        if (path / CONFIG).is_file():
            return path / CONFIG
        found = RunDir.find_checkpoint(path)
        return found / CONFIG if found is not None and (found / CONFIG).is_file() else None
