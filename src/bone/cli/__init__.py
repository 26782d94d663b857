"""The `bone` command: one module per command (train, eval, merge, export, generate, chat, bench, compare), each with its own
argument parser (`parse(argv)`) and its work (`run(args)`); this module dispatches and reports errors.

Errors a user can fix print one line, `bone <command>: error: ...`, and exit with status 1: every
`bone.errors.BoneError` (bad config, data, adapters, missing or existing paths, missing packages),
running out of memory (with what to try), and the OS errors a user causes (disk full or over quota,
read-only filesystem, permission denied, a missing or existing path). Anything else is a bug in
bone: its traceback is printed, then one line asking to report it (status 1). `--traceback`
(before or after the command) prints the traceback of user errors too. Usage errors are
argparse's (usage line, message, status 2). Output piped into a reader that stops early
(`| head`) ends the command quietly with status 141, as a pipe-closed C program's shell reports.
Third-party log lines and warnings that describe no problem of the user's run are hidden
(`QUIET_LOGGERS`, `QUIET_WARNINGS`).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import sys
import traceback
import warnings

from . import bench, chat, compare, export, generate, merge, train
from . import eval as eval_command

COMMANDS = {"train": train, "eval": eval_command, "merge": merge, "export": export, "generate": generate, "chat": chat,
            "bench": bench, "compare": compare}

OS_HINTS = {  # errno a user causes -> what to do (after the OS's own words and the path)
    errno.ENOSPC: "free some space, or write somewhere else", errno.EDQUOT: "free some space, or write somewhere else",
    errno.EROFS: "write somewhere else", errno.EACCES: "check the permissions, or write somewhere else",
    errno.EPERM: "check the permissions, or write somewhere else", errno.ENOENT: "", errno.EEXIST: "",
    errno.EISDIR: "", errno.ENOTDIR: "",
}
CPU_OOM = ("can't allocate memory", "not enough memory", "out of memory")  # torch's CPU allocator: a RuntimeError


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {m.USAGE:<50} {m.ABOUT}" for m in COMMANDS.values())
    p = argparse.ArgumentParser(
        prog="bone", usage="bone [--traceback] <command> [options]", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Bone (Block-Affine / DiSHA / MiSS) fine-tuning: train, evaluate, merge and export adapters; "
                    "generate and chat with them.",
        epilog=f"commands:\n{listing}\n\nRun `bone <command> --help` for the options of each command.")
    p.add_argument("--traceback", action="store_true", help="on an error, also print its full traceback")
    p.add_argument("command", choices=list(COMMANDS), metavar="<command>", help=", ".join(COMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never imported just to classify an error
    if isinstance(err, MemoryError) or (torch is not None and isinstance(err, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(s in str(err).lower() for s in CPU_OOM)


def user_message(err: BaseException, oom_hint: str) -> str | None:
    """The one line for an error the user can fix, or None for a bug in bone."""
    from ..errors import BoneError

    if isinstance(err, BoneError):
        return str(err)
    if _out_of_memory(err):
        detail = f" ({str(err).strip().splitlines()[0]})" if str(err).strip() else ""
        return f"out of memory{detail}. {oom_hint}"
    if isinstance(err, OSError) and err.errno in OS_HINTS:
        where = f": '{err.filename}'" if err.filename else ""
        hint = f" ({OS_HINTS[err.errno]})" if OS_HINTS[err.errno] else ""
        return f"{err.strerror or err}{where}{hint}"
    return None


def report(err: BaseException, command: str, show_traceback: bool) -> int:
    """Print `err` as bone's command line does; returns the exit status (1)."""
    message = user_message(err, COMMANDS[command].OOM_HINT)
    if message is None or show_traceback:
        traceback.print_exception(err, file=sys.stderr)
    if message is None:
        from .. import __version__

        print(f"bone {command}: internal error ({type(err).__name__}): this is a bug in bone, not in your input; "
              f"please report it with the traceback above (bone {__version__}, Python {sys.version.split()[0]})",
              file=sys.stderr)
    else:
        print(f"bone {command}: error: {message}", file=sys.stderr)
    return 1


# third-party log lines the command hides: they describe no problem of the user's run
QUIET_LOGGERS = {
    # bitsandbytes on CPUs with AVX512-BF16 looks for an optional Hub kernel (transformers installs `kernels`, the
    # Hub refuses it offline) and warns at import, even when no quantized layer is used; its own kernels run instead
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
}
QUIET_WARNINGS = [  # (message regex, category): PEFT calls a transformers 5 property it has deprecated
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if not argv:
        _parser().print_help(sys.stderr)
        return 2
    try:
        top = _parser().parse_args(argv)
        command = COMMANDS[top.command]
        args = command.parse(top.args)
    except SystemExit as done:  # --help was printed, or argparse reported a usage error
        return done.code
    try:
        code = command.run(args)
        sys.stdout.flush()  # a closed pipe shows here rather than in the interpreter's last flush
        return code
    except BrokenPipeError as err:
        if _stdout_reader_gone():
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's last flush must not raise
            return 141  # 128 + SIGPIPE
        return report(err, top.command, top.traceback or args.traceback)  # another pipe (a socket, a child): a bug
    except Exception as err:
        return report(err, top.command, top.traceback or args.traceback)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a file (io.StringIO)
        return False
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
