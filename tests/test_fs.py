"""bone.fs: atomic writes with ordinary permissions, temporaries of dead writers cleaned, full disks."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch

from bone import fs


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_and_folders_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        f = fs.write_text(tmp_path / "a.txt", "x")
        d = fs.make_temp_dir(tmp_path / "folder")
        st = tmp_path / "w.safetensors"  # safetensors itself creates files 0600
        fs.save_safetensors({"w": torch.zeros(2)}, st)
        lib = tmp_path / "lib"  # a folder a library wrote privately (transformers' save_pretrained)
        (lib / "sub").mkdir(parents=True)
        for f in (lib / "a.safetensors", lib / "sub" / "b.json"):
            f.write_text("x")
            f.chmod(0o600)
        fs.open_up_files(lib)
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o666 & ~umask
    assert st.stat().st_mode & 0o777 == 0o666 & ~umask
    assert all(f.stat().st_mode & 0o777 == 0o666 & ~umask for f in lib.rglob("*") if f.is_file())
    assert d.stat().st_mode & 0o777 == 0o777 & ~umask


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    path = fs.write_text(tmp_path / "a.json", "old")

    def explode(tmp):
        open(tmp, "w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        fs.atomic_write(path, explode)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_write_json_refuses_nan_before_writing(tmp_path):
    with pytest.raises(ValueError):
        fs.write_json(tmp_path / "m.json", {"loss": float("nan")})
    assert not list(tmp_path.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_only_removes_temporaries_of_dead_writers(tmp_path):
    final = tmp_path / "merged"
    dead, live = _dead_pid(), os.getppid()
    stale_dir = tmp_path / f".merged.tmp-{dead}"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x" * 10)
    stale_file = tmp_path / f".merged.tmp-{dead}.old"
    stale_file.write_text("x")
    kept = [tmp_path / f".merged.tmp-{live}", tmp_path / f".other.tmp-{dead}", tmp_path / "merged.tmp-1", tmp_path / "notes.txt"]
    for p in kept:
        p.write_text("keep")
    removed = fs.remove_stale(final)
    assert sorted(removed) == sorted([stale_dir, stale_file])
    assert all(p.exists() for p in kept) and not stale_dir.exists() and not stale_file.exists()


def test_replace_dir_swaps_complete_folders(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = fs.make_temp_dir(final)
    (tmp / "new.txt").write_text("new")
    fs.replace_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_real_full_disk_leaves_the_old_file_and_no_temporary(small_disk):
    disk = small_disk(128)
    path = fs.write_text(disk.path / "results.json", "old")
    disk.fill()
    with pytest.raises(OSError) as err:
        fs.write_text(path, "x" * 200_000)
    assert err.value.errno == errno.ENOSPC
    assert path.read_text() == "old"
    assert sorted(p.name for p in disk.path.iterdir()) == [".filler", "results.json"]


def test_temp_target_reads_what_a_temporary_was_for():
    assert fs.temp_target(".step-000004.tmp-123") == "step-000004"
    assert fs.temp_target(".metrics.jsonl.tmp-9.a1b2") == "metrics.jsonl"
    assert fs.temp_target(".adapter.tmp-77.old") == "adapter"
    assert fs.temp_target("adapter.tmp-77") is None and fs.temp_target(".adapter.tmp-x") is None


def test_a_failed_write_names_the_file_it_was_writing(tmp_path):
    """An OSError from write()/flush() names no file; atomic_write names the file (not its temporary)."""
    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        fs.atomic_write(tmp_path / "optimizer.pt", full)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(tmp_path / "optimizer.pt"))

    def denied(tmp):
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/x")

    with pytest.raises(PermissionError) as err:  # an error about another file keeps its own name
        fs.atomic_write(tmp_path / "a.txt", denied)
    assert err.value.filename == "/elsewhere/x"


def test_append_text_appends_whole_lines_or_nothing_on_a_real_full_disk(small_disk):
    disk = small_disk(64)
    path = disk.path / "metrics.jsonl"
    fs.append_text(path, '{"step": 1}\n')
    fs.append_text(path, "x" * 4000 + "\n")  # 4013 bytes: the next line crosses into a new page
    before = path.read_bytes()
    disk.fill()
    with pytest.raises(OSError) as err:
        fs.append_text(path, '{"step": 2, "loss": 1.25, "note": "' + "y" * 300 + '"}\n')
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(path))
    assert path.read_bytes() == before  # the part that fitted in the last page was cut off again
    assert path.stat().st_mode & 0o777 == 0o666 & ~fs._umask()


@pytest.mark.parametrize("leave", [0, 5000, 20000])  # the disk fills in the header, a record, the end
def test_save_torch_on_a_full_disk_is_an_oserror_naming_the_file(small_disk, leave):
    """torch's zip writer, closing after a failed write, raises a RuntimeError over the OSError;
    whatever byte the disk fills at, the writer reports the OSError (ENOSPC, the file's name) and
    leaves neither the file nor a temporary."""
    import torch

    disk = small_disk(64)
    disk.fill(leave=leave)
    path = disk.path / "rng-rank0.pt"
    with pytest.raises(OSError) as info:
        fs.save_torch({"torch": torch.zeros(1 << 18, dtype=torch.uint8), "python": list(range(5000))}, path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert not path.exists() and not [p for p in disk.path.iterdir() if ".tmp-" in p.name]
