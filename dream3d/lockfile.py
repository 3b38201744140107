"""Lock files with an owner: one process at a time holds `path` (an fcntl lock), and the file names the holder.

The file holds a JSON record of its holder (pid, host, since when, and what the caller adds) while it is held,
and nothing once released. The kernel drops the fcntl lock of a process that dies, so a record found in a lock
that is free belongs to a process that ended without releasing it (killed, or on another host without shared
locks): the next holder takes it over and is told whose it was. Used for run folders, batch jobs and kernel builds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Callable, Iterator

from dream3d.errors import safe_text

POLL_S = 0.2


class LockBusy(Exception):
    """Another process holds the lock file `path`; `owner` is its record ({} when unreadable)."""

    def __init__(self, path: Path, owner: dict) -> None:
        super().__init__(f"{path} is held by {describe_owner(owner)}")
        self.path, self.owner = path, owner


def now_utc() -> str:
    """The UTC time to the second, ISO 8601 (the `since` of a lock record)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_owner(owner: dict) -> str:
    """'pid 123 on host since 2026-12-01T10:00:00+00:00' of a lock record."""
    return (f"pid {safe_text(owner.get('pid', '?'))} on {safe_text(owner.get('host', '?'))} "
            f"since {safe_text(owner.get('since', '?'))}")


def describe_takeover(owner: dict) -> str:
    """Why a free lock still named `owner`: 'no longer running' (same host, pid gone) or 'not holding it'."""
    same_host = owner.get("host") == socket.gethostname()
    try:
        gone = same_host and not pid_alive(int(owner.get("pid", 0)))
    except (TypeError, ValueError):
        gone = False
    return "no longer running" if gone else "not holding it"


def _read_owner(fh: IO[str]) -> dict:
    fh.seek(0)
    try:
        owner = json.loads(fh.read() or "{}")
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


@contextlib.contextmanager
def held(path: Path, record: dict, wait_s: float = 0.0,
         on_wait: Callable[[dict], None] | None = None) -> Iterator[dict]:
    """Hold the lock file `path` (created if needed) with `record` plus pid, host and since; yields the record of
    a previous holder that did not release it ({} when none).

    Waits up to `wait_s` seconds for another holder (calling `on_wait(its record)` once when it starts waiting),
    then raises LockBusy. The record is cleared when the block ends, however it ends.
    """
    import fcntl

    fh = open(path, "a+", encoding="utf-8")
    try:
        deadline, waiting = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = _read_owner(fh)
                if time.monotonic() >= deadline:
                    raise LockBusy(path, owner) from None
                if not waiting and on_wait is not None:
                    on_wait(owner)
                waiting = True
                time.sleep(POLL_S)
        previous = _read_owner(fh)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now_utc(), **record}))
        fh.flush()
        try:
            yield previous if previous.get("pid") else {}
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
    finally:
        fh.close()  # closing drops the lock
