"""Writing files and folders so that a reader sees the old version or the complete new one.

Every file bone writes goes through `atomic_write` (or `write_text` / `write_json`); every folder
it builds (adapters, checkpoints, merged models) is built under `temp_sibling(final)` and moved
into place with `replace_dir`. Temporaries are named `.<name>.tmp-<pid>`, so `remove_stale`
can delete those whose writer is gone (a killed run) without touching anything else.

Results get the permissions an ordinary write would get under the user's umask (temporary files
are created private, so they are opened up before the rename).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?P<suffix>\.[^.]*)?$")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_up(path: str | os.PathLike, directory: bool = False) -> None:
    """Give `path` the mode a plain create would: 0666 (files) or 0777 (folders) minus the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def open_up_files(folder: str | os.PathLike) -> None:
    """`open_up` every file under `folder`: after a library wrote them (transformers' save_pretrained
    writes its safetensors 0600)."""
    for f in Path(folder).rglob("*"):
        if f.is_file() and not f.is_symlink():
            open_up(f)


def temp_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """The temporary name this process uses for `path`: `.<name>.tmp-<pid><suffix>` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def temp_target(name: str) -> str | None:
    """The name of the file or folder that the temporary named `name` (see `temp_sibling`) was
    being written for; None when `name` is not such a temporary."""
    m = _TMP.match(name)
    return None if m is None else m.group("name")


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries of `path` (see `temp_sibling`) left by writers that are no longer
    running; returns what was removed. Other files, and live writers' temporaries, are kept."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for p in path.parent.iterdir():
        m = _TMP.match(p.name)
        if m is None or m.group("name") != path.name or _alive(int(m.group("pid"))):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it into place, so `path`
    is either its old self or complete. On any error the temporary is removed and `path` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}.", suffix="", dir=path.parent)
    os.close(fd)
    try:
        with naming(path, tmp):
            write(tmp)
            open_up(tmp)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def naming(path: str | os.PathLike, *aliases: str | os.PathLike):
    """Re-raise an OSError that names no file (a failed write or flush: a full disk) or names one of
    `aliases` (the temporary being written) with `path` as its file, so the message says which file."""
    try:
        yield
    except OSError as err:
        if err.errno is None or (err.filename is not None and str(err.filename) not in map(str, aliases)):
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append `text` (e.g. one JSON line) whole or not at all: after a failed write (a full disk) the
    file is cut back to its previous length, and the error names the file."""
    path, rest = Path(path), memoryview(text.encode("utf-8"))
    with naming(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                while rest:
                    rest = rest[os.write(fd, rest):]
            except OSError:
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """safetensors' `save_file`, with its I/O failures raised as the OSError they are (a full disk is
    `OSError(ENOSPC)`, not a SafetensorError), so callers and the CLI treat them like any write. The
    file gets the umask's mode (safetensors creates it private, 0600)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        found = re.search(r"\(os error (\d+)\)", str(err))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None
    open_up(path)


def save_torch(obj, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to `path` atomically, a failed write raised as the OSError it is: written
    through a Python file (torch.save to a path name raises a RuntimeError on a full disk), and the
    zip writer's RuntimeError on closing after a failed write is replaced by that write's OSError."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from None
                raise

    return atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """JSON (with a final newline), serialized before anything is written."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"
    return write_text(path, text)


def make_temp_dir(final: str | os.PathLike) -> Path:
    """A fresh, empty temporary folder for building `final` (stale ones of dead writers removed)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp = temp_sibling(final)
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    tmp.mkdir()
    open_up(tmp, directory=True)
    return tmp


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the finished folder `tmp` to `final`, replacing an existing folder there (the old one
    is renamed aside first, so `final` is always a complete folder, old or new)."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = temp_sibling(final, ".old")
        if old.exists():
            shutil.rmtree(old)
        final.replace(old)
        tmp.replace(final)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        tmp.replace(final)
    return final
