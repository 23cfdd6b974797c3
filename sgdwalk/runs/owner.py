"""Who writes a run directory: one process at a time, for the run's life.

``acquire_run_directory`` / ``release_run_directory`` (or ``hold_run_directory``) make the
calling process the directory's owner, or raise ``RunDirectoryBusyError`` at once naming the
process that is (pid, host, start time). ``runlog.RunWriter`` owns its directory from
``create`` / ``reopen`` to ``close``, ``runner.resume_walk`` from before it reads the run,
and a sweep's cell from before it looks at the cell's status.

Why an OS lock, ``fcntl.flock`` on ``RUN_DIR/.lock``, rather than a pid file alone: the
kernel releases a flock when its holder dies, however it dies (kill -9 included), so a stale
lock never needs a guess whether a recorded pid is still alive or was reused by another
program, and taking the lock is one atomic call, with no window between "is it free?" and
"it is mine". The file also names its holder for the message a second writer gets; a dead
holder's name is simply overwritten by the next owner. flock works between the processes
of one machine, and on NFS (Linux 2.6.12 and later emulate it with POSIX locks).

The owner is a process: its own nested holds (the runner inside a sweep cell's hold) count
up and down and never block one another. Torch-free, so that a test can hold a directory
from a fresh interpreter in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from sgdwalk.base.errors import SgdwalkError

# Never removed (not one of runlog.RUN_FILES): a lock file deleted while held would let a
# second writer lock a new file of the same name.
LOCK_FILE: Final = ".lock"


class RunDirectoryError(SgdwalkError):
    """A run directory that cannot be created, read or resumed (the message says why)."""


class RunDirectoryBusyError(RunDirectoryError):
    """Another process owns the run directory (the message names it: pid, host, start time)."""


@dataclass
class _Hold:
    handle: IO[str]
    pid: int
    depth: int = 1


# This process's holds; an entry made by a parent before a fork is not the child's (pid).
_HOLDS: dict[Path, _Hold] = {}


def holder_text(text: str) -> str:
    """The holder as a lock file's text names it, e.g. "pid 123 on host a, since 2026-…"."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']}, since {holder['started']}"
    except (json.JSONDecodeError, TypeError, KeyError):
        return "holder not yet recorded"  # it has just taken the lock and not yet written its name


def acquire_run_directory(run_dir: str | Path) -> None:
    """Become the owner of ``run_dir`` (created if needed), or raise ``RunDirectoryBusyError``
    at once, naming the process that is. Release with ``release_run_directory``."""
    key = Path(run_dir).resolve()
    hold = _HOLDS.get(key)
    if hold is not None and hold.pid == os.getpid():
        hold.depth += 1
        return
    try:
        key.mkdir(parents=True, exist_ok=True)
        # "a+": opening must not erase the holder's name before the lock is ours. Open until released.
        handle: IO[str] = open(key / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        raise RunDirectoryError(f"cannot create the run directory {run_dir}: {error.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = holder_text(handle.read())
        handle.close()
        raise RunDirectoryBusyError(
            f"{run_dir} is being written by another sgdwalk process ({holder}); "
            "wait for it to end, or stop it and continue with --resume"
        ) from None
    started = _datetime.datetime.now(_datetime.UTC).isoformat(timespec="seconds")
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n")
    handle.flush()
    _HOLDS[key] = _Hold(handle, os.getpid())


def release_run_directory(run_dir: str | Path) -> None:
    """Give up one hold of ``run_dir``; the lock goes with the last (a no-op when not held)."""
    key = Path(run_dir).resolve()
    hold = _HOLDS.get(key)
    if hold is None or hold.pid != os.getpid():
        return
    hold.depth -= 1
    if hold.depth == 0:
        del _HOLDS[key]
        fcntl.flock(hold.handle, fcntl.LOCK_UN)
        hold.handle.close()


@contextlib.contextmanager
def hold_run_directory(run_dir: str | Path) -> Iterator[None]:
    """Own ``run_dir`` for the ``with`` block (see ``acquire_run_directory``)."""
    acquire_run_directory(run_dir)
    try:
        yield
    finally:
        release_run_directory(run_dir)


__all__ = [
    "LOCK_FILE",
    "RunDirectoryBusyError",
    "RunDirectoryError",
    "acquire_run_directory",
    "hold_run_directory",
    "holder_text",
    "release_run_directory",
]
