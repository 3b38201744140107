"""`batch.json`: the record of a batch, one entry per job, shared by every process working on the batch.

Each update is a read-merge-write under an exclusive lock (`batch.lock`, fcntl; on Linux NFS this is a POSIX
lock) and the file is replaced atomically (`fileio.write_json_atomic`), so shards of an array job can share one
batch folder and a crash never leaves a half-written manifest. A process only replaces the entries of its own
jobs; entries of other jobs are kept as they are.

Job entry: name, index, prompt, seed, method, steps, where (file:line), run_dir (relative to the batch folder),
state (pending | running | done | failed), error (one line), note (e.g. "interrupted at step 40"), attempts,
step, resumed_from (the step the last attempt started at), started / finished (UTC ISO times), seconds (wall
time over all attempts), worker {host, pid}, outputs {name: path relative to the batch folder}.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

STATES = ("pending", "running", "done", "failed")
VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_entry(job) -> dict:
    """A fresh (pending) entry for a `jobs.Job`; failed at once when its settings could not be resolved."""
    return {"name": job.name, "index": job.index, "prompt": job.prompt, "seed": job.seed, "method": job.method,
            "steps": job.steps, "where": job.where, "run_dir": job.name,
            "state": "failed" if job.error else "pending", "error": job.error, "note": "", "attempts": 0,
            "step": 0, "resumed_from": None, "started": None, "finished": None, "seconds": 0.0, "worker": None,
            "outputs": {}}


class Manifest:
    """The manifest file of a batch folder."""

    def __init__(self, batch_dir: str | Path):
        self.dir = Path(batch_dir)
        self.path = self.dir / "batch.json"
        self.lock_path = self.dir / "batch.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock across processes (and hosts sharing the folder where the file system supports it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            try:
                import fcntl
            except ImportError:  # not POSIX: no cross-process lock (single process use only)
                yield
                return
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> dict:
        """The manifest as stored ({"version", "prompts", "created", "updated", "jobs": [...]}), or an empty one."""
        if not self.path.is_file():
            return {"version": VERSION, "prompts": "", "created": now(), "updated": now(), "jobs": []}
        from dream3d.errors import Dream3DError
        from dream3d.fileio import read_json

        data = read_json(self.path, "batch manifest")
        if not isinstance(data, dict) or not isinstance(data.get("jobs", []), list):
            raise Dream3DError(f"{self.path}: the batch manifest is not a dream3d batch record; move it away to "
                               "start the batch again")
        data.setdefault("jobs", [])
        return data

    def entries(self) -> dict[str, dict]:
        return {e["name"]: e for e in self.read()["jobs"]}

    def merge(self, entries: Iterable[dict], add_only: bool = False,
              on_write: Callable[[dict], None] | None = None, **top) -> dict:
        """Insert/replace `entries` by name (add_only: only insert missing ones) and set top-level fields.

        `on_write(merged)` runs under the lock (the gallery is rewritten there, so it always matches the file).
        Returns the merged manifest. Jobs stay sorted by their batch index.
        """
        from dream3d.fileio import write_json_atomic

        with self.locked():
            data = self.read()
            by_name = {e["name"]: e for e in data["jobs"]}
            for e in entries:
                if not (add_only and e["name"] in by_name):
                    by_name[e["name"]] = dict(e)
            data["jobs"] = sorted(by_name.values(), key=lambda e: (e.get("index", 0), e["name"]))
            data.update(top)
            data["updated"] = now()
            write_json_atomic(self.path, data)
            if on_write is not None:
                on_write(data)
            return data
