"""Checkpoint and result files when something goes wrong: damaged checkpoint files on --resume are
one error naming the file (and an earlier checkpoint to use), a full disk while writing a
checkpoint, metrics, the final adapter or loss.png names the file and leaves what was there before
intact, with no temporary left behind."""
from __future__ import annotations

import errno
import json

import pytest

import bone.io
from bone.errors import CorruptFileError
from bone.train.trainer import Trainer
from tiny import config


def snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(root) -> list:
    return [p for p in root.rglob(".*") if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def stopped(model_dir, tmp_path_factory):
    """A run stopped after step 4, with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert Trainer(config(model_dir, out)).setup().run(stop_at=4) == 0
    return out


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: b"not a checkpoint at all " * 8,
}


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng-rank0.pt", "state.json"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_file_is_named_and_nothing_changes(model_dir, stopped, tmp_path, name, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    broken = run / "checkpoints" / "step-000004" / name
    broken.write_bytes(DAMAGE[damage](broken.read_bytes()))
    before = snapshot(run)
    with pytest.raises(CorruptFileError) as err:
        Trainer(config(model_dir, run), resume="latest").setup()
    msg = str(err.value)
    assert msg.startswith(f"{broken} is truncated or corrupt (") and "\n" not in msg
    assert msg.endswith(f"resume from an earlier checkpoint (--resume {run / 'checkpoints' / 'step-000002'}) "
                        f"or start again with --overwrite")
    assert snapshot(run) == before


def test_a_state_json_without_its_fields_is_named(model_dir, stopped, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    state = run / "checkpoints" / "step-000004" / "state.json"
    state.write_text(json.dumps({"step": 4}))
    with pytest.raises(CorruptFileError, match=r"state.json is truncated or corrupt \(it must be a JSON object with the "
                                               r"integers \['step', 'epoch', 'pos', 'tokens', 'global_batch'\]\)"):
        Trainer(config(model_dir, run), resume="latest").setup()


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(model_dir, tmp_path, small_disk):
    disk = small_disk(512)  # a checkpoint of the tiny run is ~150 KiB
    run = disk.path / "run"
    assert Trainer(config(model_dir, run)).setup().run(stop_at=2) == 0
    before = snapshot(run / "checkpoints")
    trainer = Trainer(config(model_dir, run), resume="latest").setup()
    disk.fill(leave=8 << 10)
    with pytest.raises(OSError) as err:
        trainer.run()
    assert err.value.errno == errno.ENOSPC
    assert str(err.value.filename).startswith(str(run / "checkpoints" / "step-000004") + "/")
    assert snapshot(run / "checkpoints") == before and not temporaries(disk.path)
    assert not (run / "adapter").exists()
    (disk.path / ".filler").unlink()  # space again: the run resumes from the checkpoint it kept
    trainer = Trainer(config(model_dir, run), resume="latest").setup()
    assert trainer.step == 2 and trainer.run() == 0 and (run / "adapter" / "adapter_model.safetensors").is_file()


def test_a_full_disk_while_logging_metrics_names_metrics_jsonl(model_dir, tmp_path, small_disk):
    disk = small_disk(512)
    run = disk.path / "run"
    trainer = Trainer(config(model_dir, run)).setup()
    disk.fill()
    with pytest.raises(OSError) as err:
        trainer.run()
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(run / "metrics.jsonl"))
    assert not run.exists() and not temporaries(disk.path)  # a fresh run with no checkpoint leaves nothing


def test_a_full_disk_while_writing_the_adapter_keeps_the_previous_one(model_dir, stopped, tmp_path, monkeypatch):
    """The adapter's tensors are refused by a writer that reports ENOSPC as safetensors does on a full disk
    (fs.save_safetensors turns its error into OSError(ENOSPC)); the adapter a finished run wrote stays."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    assert Trainer(config(model_dir, run), resume="latest").setup().run() == 0
    before = snapshot(run / "adapter")
    real = bone.io.save_safetensors

    def full_for_the_adapter(tensors, path, metadata=None):
        if "/.adapter.tmp-" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(bone.io, "save_safetensors", full_for_the_adapter)
    trainer = Trainer(config(model_dir, run), resume=str(run / "checkpoints" / "step-000004")).setup()
    with pytest.raises(OSError) as err:
        trainer.run()
    assert err.value.errno == errno.ENOSPC
    assert str(err.value.filename).startswith(str(run / "adapter" / "adapter_model.safetensors"))
    assert snapshot(run / "adapter") == before and not temporaries(run)


def test_a_full_disk_while_plotting_names_loss_png(model_dir, tmp_path, monkeypatch):
    """matplotlib's write fails as a full disk makes it (OSError without a file name); bone names loss.png."""
    import matplotlib.figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    run = tmp_path / "run"
    with pytest.raises(OSError) as err:
        Trainer(config(model_dir, run, **{"logging.plot": True})).setup().run()
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(run / "loss.png"))
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and not (run / "loss.png").exists()
    assert not temporaries(run)

