"""The batch driver: jobs -> manifest -> runner (local workers or Ray) -> manifest, live table, gallery.

Rerunning the same command continues the batch: done jobs are skipped, pending and interrupted ones run (a run
folder with a checkpoint resumes from it), failed ones are retried only with `retry_failed`. A job whose run
folder another process holds (a second `dream3d batch` on the same folder) is left to it, with one line. The driver is the only
writer of its jobs' manifest entries; every state change is merged into `batch.json` and redraws `index.html`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TextIO

from dream3d.batch.gallery import write_gallery
from dream3d.batch.jobs import build_jobs, parse_prompts, shard_jobs
from dream3d.batch.manifest import Manifest, new_entry, now
from dream3d.batch.progress import LiveTable

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclasses.dataclass
class BatchOptions:
    """What `dream3d batch` was asked (see `dream3d batch --help`). ray: None = no Ray, "" = a local Ray,
    else a cluster address."""

    prompts: str
    out: str | None = None
    config: str | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    seeds: list[int] | None = None
    workers: int | None = None
    shard: tuple[int, int] | None = None
    ray: str | None = None
    retry_failed: bool = False
    dry_run: bool = False


def default_batch_dir(prompts: str | Path, root: str | Path = "outputs") -> Path:
    """outputs/batch-<prompts file stem>: the same command always finds its batch again."""
    from dream3d.fileio import slugify
    return Path(root) / f"batch-{slugify(Path(prompts).stem)}"


def _plan(job, entry: dict | None, batch_dir: Path, retry_failed: bool) -> tuple[dict, bool]:
    """(the job's entry for this run, whether it runs)."""
    e = dict(entry) if entry else new_entry(job)
    if job.error:  # settings that cannot be resolved: failed, never run
        e.update(state="failed", error=job.error)
        return e, False
    if e["state"] == "running":  # its batch process died (killed, crashed, machine lost)
        e.update(state="pending", note=f"interrupted at step {e.get('step') or 0}")
    if e["state"] == "done" and not (batch_dir / e["run_dir"]).is_dir():
        e.update(state="pending", note="run folder missing; generating again")
    if e["state"] == "failed" and retry_failed:
        e.update(state="pending", note=f"retrying after: {e.get('error', '')}"[:300], error="")
    return e, e["state"] == "pending"


def run_batch(opts: BatchOptions, stream: TextIO = sys.stderr, live: bool | None = None) -> int:
    """Run (or continue) a batch. Returns 0 when all of this shard's jobs are done, 1 when any failed, 130 when
    interrupted. Prints the batch folder as the last line of stdout."""
    prompts = Path(opts.prompts)
    jobs = build_jobs(parse_prompts(prompts), opts.config, opts.overrides, opts.seeds, prompts_dir=prompts.parent)
    mine = shard_jobs(jobs, opts.shard)
    batch_dir = Path(opts.out) if opts.out else default_batch_dir(prompts)
    manifest = Manifest(batch_dir)
    existing = manifest.entries() if manifest.path.is_file() else {}
    plans = {j.name: _plan(j, existing.get(j.name), batch_dir, opts.retry_failed) for j in mine}
    if opts.dry_run:
        for j in mine:
            e, runs = plans[j.name]
            print(f"{j.name}\t{'run' if runs else 'skip'}\t{e['state']}\t{j.prompt}")
        return 0

    entries = {name: e for name, (e, _) in plans.items()}
    todo = [j for j in mine if plans[j.name][1]]
    runner = _runner(opts, batch_dir)
    gallery = lambda data: write_gallery(batch_dir, data)  # noqa: E731
    manifest.merge([new_entry(j) for j in jobs], add_only=True)  # every job is listed, whichever shard runs it
    manifest.merge(entries.values(), on_write=gallery, prompts=str(prompts.resolve()))
    table = LiveTable(entries, stream=stream, live=live)
    tracker = _Tracker(entries, manifest, table, batch_dir, on_write=gallery)

    interrupted = False
    run_dirs = {j.name: str((batch_dir / j.name).resolve()) for j in todo}
    skipped = sum(1 for e in entries.values() if e["state"] == "failed")
    if skipped and not opts.retry_failed:
        print(f"dream3d batch: {skipped} failed job(s) not retried (add --retry-failed to run them again)",
              file=stream)
    with table, _sigterm_as_interrupt():
        try:
            runner.run(todo, run_dirs, tracker.on_event)
        except KeyboardInterrupt:
            interrupted = True
        finally:  # whatever happened, no job of ours stays "running"
            tracker.release_running()
    counts = table.counts()
    print(f"dream3d batch: {table.summary()}; gallery: {batch_dir / 'index.html'}", file=stream)
    print(batch_dir)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if counts["failed"] else 0


class _Tracker:
    """Applies runner events to this process's manifest entries, saves them and redraws the table."""

    def __init__(self, entries: dict[str, dict], manifest: Manifest, table: LiveTable, batch_dir: Path,
                 on_write: Callable[[dict], None]):
        self.entries, self.manifest, self.table, self.batch_dir = entries, manifest, table, batch_dir
        self.on_write = on_write
        self.attempt_t0: dict[str, float] = {}
        self.base_seconds: dict[str, float] = {}
        self.taken: set[str] = set()  # jobs another process runs: their entries are its to write

    def tick(self, name: str) -> None:
        """Wall time over all attempts, the current one included."""
        if name in self.attempt_t0:
            self.entries[name]["seconds"] = round(self.base_seconds[name] + time.time() - self.attempt_t0[name], 2)

    def save(self, name: str) -> None:
        if name in self.taken:
            return
        self.tick(name)
        self.manifest.merge([self.entries[name]], on_write=self.on_write)

    def on_event(self, ev: dict) -> None:
        """One worker event (see `dream3d.batch.worker`)."""
        name, kind = ev["job"], ev["type"]
        e = self.entries.get(name)
        if e is None:
            return
        if kind == "started":
            self.attempt_t0[name], self.base_seconds[name] = time.time(), float(e.get("seconds") or 0.0)
            e.update(state="running", started=now(), finished=None, error="", attempts=e.get("attempts", 0) + 1,
                     worker={"host": ev.get("host"), "pid": ev.get("pid")})
        elif kind == "training":
            e.update(step=ev["step"], steps=ev["steps"], resumed_from=ev["step"])
            self.table.phase[name] = "train"
        elif kind in ("progress", "checkpoint"):
            e["step"] = ev["step"]
            self.table.phase[name] = ev.get("phase", "train")
        elif kind == "finished":
            self._finish(e, ev)
        if kind == "progress":
            self.tick(name)
        else:
            self.save(name)
        if kind == "finished":
            self.attempt_t0.pop(name, None)
        self.table.update(name, changed_state=kind in ("started", "finished"))

    def _finish(self, e: dict, ev: dict) -> None:
        if ev.get("step") is not None:
            e["step"] = ev["step"]
        state = ev["state"]
        if state == "taken":  # another process holds the run: show its record, never overwrite it
            self.taken.add(e["name"])
            e.update(self.manifest.entries().get(e["name"], {}), note=f"left to {ev.get('error', 'another process')}")
        elif state == "interrupted":
            e.update(state="pending", note=f"interrupted at step {e.get('step') or 0}")
        elif state == "done":
            e.update(state="done", error="", note="", finished=now(),
                     outputs=_relative(ev.get("outputs") or {}, self.batch_dir))
            self.table.done_here += 1
        else:
            e.update(state="failed", error=ev.get("error", ""), finished=now(), outputs={})

    def release_running(self) -> None:
        """Jobs still marked running (the batch is stopping) go back to pending."""
        for name, e in self.entries.items():
            if e["state"] == "running" and name not in self.taken:
                e.update(state="pending", note=f"interrupted at step {e.get('step') or 0}")
                self.save(name)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (Slurm time limit, `kill`) stops the batch like Ctrl-C: jobs checkpoint and go back to pending."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _relative(outputs: dict[str, str], batch_dir: Path) -> dict[str, str]:
    root = batch_dir.resolve()
    out = {}
    for key, path in outputs.items():
        p = Path(path).resolve()
        out[key] = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
    return out


def _runner(opts: BatchOptions, batch_dir: Path):
    if opts.ray is not None:
        from dream3d.batch.local import cpu_count
        from dream3d.batch.ray_runner import RayRunner, import_ray

        import_ray()  # a missing Ray is a one-line error before anything runs
        return RayRunner(address=opts.ray or None, num_cpus=None if opts.ray else (opts.workers or cpu_count()))
    from dream3d.batch.local import LocalRunner, gpu_ids

    gpus = gpu_ids()
    workers = opts.workers or (len(gpus) if len(gpus) > 1 else 1)
    return LocalRunner(workers, batch_dir / "logs")
