"""Failures every process of a run agrees on.

A write that fails on one process (a full disk, a permission) must not leave the others waiting
in their next collective call: `write` runs every write of a group (the collective ones run on
every process even after a failure), then each process learns of the first failure and raises it:
the failing process its own OSError, the others one with the same errno, text and file. With one
process this is just the write and its error. Errors raised on every process are marked
(`everywhere`), so that only the main process reports them (`bone train`).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from accelerate.utils import broadcast_object_list, gather_object


def everywhere(error: BaseException) -> BaseException:
    """Mark `error` as raised on every process of the run (the main process reports it)."""
    error.raised_everywhere = True
    return error


def _info(error: OSError | None, filename=None) -> tuple | None:
    return None if error is None else (error.errno, error.strerror, filename or error.filename)


def raise_everywhere(error: OSError | None) -> None:
    """Collective: raise the first failure of any process on every process (nothing when none failed)."""
    write(False, [lambda: _raise(error)])


def _raise(error: OSError | None) -> None:
    if error is not None:
        raise error


def make_dir(is_main: bool, final: Path, make: Callable[[], Path]) -> Path:
    """Collective: the temporary folder for `final`, made by the main process and sent to every process."""
    made = failed = None
    if is_main:
        try:
            made = make()
        except OSError as err:
            failed = err
    made, info = broadcast_object_list([made, _info(failed, str(final))])
    if failed is not None:
        raise everywhere(failed)
    if info is not None:
        raise everywhere(OSError(*info))
    return made


def _renamed(err: OSError, tmp: Path, final: Path) -> OSError:
    """`err` naming the file of `final` where it names one in the temporary folder `tmp`."""
    name = None if err.filename is None else str(err.filename)
    if err.errno is None or name is None or not name.startswith(str(tmp)):
        return err
    return OSError(err.errno, err.strerror, str(final) + name[len(str(tmp)):])


def write(is_main: bool, writes: list[Callable[[], object]], tmp: Path | None = None, final: Path | None = None) -> None:
    """Collective: run `writes` in order, then raise the first failed one on every process. Writes
    into the temporary folder `tmp` (of `final`): a failure names the file in `final`, and the main
    process removes `tmp` before raising."""
    failed = None
    for do in writes:
        try:
            do()
        except OSError as err:
            failed = failed or (err if tmp is None else _renamed(err, tmp, final))
    found = [info for info in gather_object([_info(failed)]) if info is not None]
    if found and is_main and tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if failed is not None:
        raise everywhere(failed)
    if found:
        raise everywhere(OSError(*found[0]))
