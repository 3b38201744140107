"""Run manager: generation/editing jobs in worker threads, a bounded FIFO queue per device, stop on request.

A job is one Trainer run (plus its export) in a run folder. Each device ("cpu", "cuda") has `runs_per_device`
worker threads taking jobs in submission order; jobs beyond them wait in line (at most `max_queue` waiting in all)
and know their position. `stop()` removes a waiting job, or asks the running Trainer to stop after its current
step (`Trainer.request_stop`); the worker then keeps the checkpoint and exports the state reached. The job outlives
the browser tab that started it: its result lands in the run folder whatever the page does.

No gradio here: the UI polls `Job.snapshot()`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dream3d.config import RunConfig
from dream3d.errors import Dream3DError, safe_text
from dream3d.events import Event

log = logging.getLogger("dream3d.app")

WAITING, STARTING, RUNNING, EXPORTING = "queued", "starting", "running", "exporting"
DONE, STOPPED, FAILED = "done", "stopped", "failed"
FINAL_STATES = (DONE, STOPPED, FAILED)
KEEP_FINISHED = 100  # finished jobs remembered (their results stay in the run folders anyway)
ERROR_TEXT = 300  # characters of a failed job's message shown in the page


class QueueFullError(Dream3DError):
    """The waiting line is full."""


@dataclass(eq=False)  # identity: a job is found in the queue by itself
class Job:
    """One generation or edit. Worker-side fields are written by the worker thread, read by the UI thread."""

    id: str
    kind: str  # "generate" | "edit"
    cfg: RunConfig
    run_dir: Path
    device: str  # "cpu" | "cuda" (resolved), the queue it waits in
    owner: str = ""  # the browser session (gradio session hash) that started it
    state: str = WAITING
    step: int = 0
    steps: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of every step
    preview: Path | None = None  # latest preview PNG
    error: str = ""  # one line when state == "failed"
    message: str = ""  # e.g. why it stopped
    phase: str = ""  # the long phase under way, in words (loading the prior, ...); "" once steps run
    submitted: float = field(default_factory=time.time)
    started: float | None = None  # time of the first step event (for the ETA)
    start_step: int = 0
    finished: float | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    done_event: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- worker side -------------------------------------------------------------------------------------------
    def on_event(self, e: Event) -> None:
        """The generation's event callback (runs in the worker thread); follows the stage that runs."""
        with self._lock:
            self.steps = e.steps
            self.phase = e.message if e.kind == "phase" else "" if e.kind in ("start", "step") else self.phase
            if e.kind == "start":
                self.state, self.step, self.run_dir = RUNNING, e.step, e.run_dir
            elif e.kind == "step":
                self.step = e.step
                if self.started is None:
                    self.started, self.start_step = time.time(), self.step - 1
                if "loss" in e.metrics:
                    self.losses.append((self.step, float(e.metrics["loss"])))
            elif e.kind == "preview":
                self.preview = e.path
            elif e.kind == "export":
                self.state = EXPORTING

    # --- UI side -----------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop after the current step (the generation polls `stop_requested` at every event)."""
        self.stop_requested.set()

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def eta_seconds(self) -> float | None:
        """Seconds left at the mean step time of this session of the run (None before two steps)."""
        with self._lock:
            if self.started is None or self.step - self.start_step < 2 or self.state != RUNNING:
                return None
            per_step = (time.time() - self.started) / (self.step - self.start_step)
            return per_step * max(self.steps - self.step, 0)

    def snapshot(self) -> dict:
        """A consistent copy of the progress fields."""
        with self._lock:
            return {"state": self.state, "step": self.step, "steps": self.steps, "loss": list(self.losses),
                    "preview": self.preview, "error": self.error, "message": self.message, "phase": self.phase,
                    "run_dir": self.run_dir}


class RunManager:
    """Bounded FIFO queue + `runs_per_device` worker threads per device.

    execute(job) does the work (the app uses `dream3d.app.worker.run_job`: the generation pipeline); it sets
    job.state to a final state or raises. A Dream3DError becomes job.error (one line); any other exception is
    logged with its traceback on the server and shown as one line.
    """

    def __init__(self, execute: Callable[[Job], None], runs_per_device: int = 1, max_queue: int = 8):
        if runs_per_device < 1:
            raise Dream3DError(f"runs per device must be at least 1, got {runs_per_device}")
        self.execute = execute
        self.runs_per_device = runs_per_device
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[Job]] = {}
        self._jobs: dict[str, Job] = {}
        self._workers: dict[str, list[threading.Thread]] = {}
        self._ids = itertools.count(1)
        self._closed = False

    # --- submitting --------------------------------------------------------------------------------------------
    def submit(self, kind: str, cfg: RunConfig, run_dir: Path, owner: str = "", device: str | None = None) -> Job:
        """Queue a job; raises QueueFullError when `max_queue` jobs are already waiting."""
        if device is None:
            from dream3d.system import resolve_device
            device = resolve_device(cfg.device).type
        with self._cond:
            if self._closed:
                raise Dream3DError("the app is shutting down")
            waiting = sum(len(q) for q in self._waiting.values())
            if waiting >= self.max_queue:
                raise QueueFullError(f"the queue is full ({waiting} runs waiting); try again when one has finished")
            job = Job(id=f"job{next(self._ids)}", kind=kind, cfg=cfg, run_dir=Path(run_dir), device=device,
                      owner=owner, steps=int(cfg.steps))
            self._jobs[job.id] = job
            finished = [k for k, j in self._jobs.items() if j.is_final]
            for k in finished[:max(0, len(finished) - KEEP_FINISHED)]:  # forget the oldest finished jobs
                del self._jobs[k]
            self._waiting.setdefault(device, deque()).append(job)
            self._ensure_workers(device)
            self._cond.notify_all()
        return job

    def _ensure_workers(self, device: str) -> None:
        threads = self._workers.setdefault(device, [])
        while len(threads) < self.runs_per_device:
            t = threading.Thread(target=self._worker, args=(device,), daemon=True,
                                 name=f"dream3d-{device}-{len(threads)}")
            threads.append(t)
            t.start()

    # --- the workers -------------------------------------------------------------------------------------------
    def _worker(self, device: str) -> None:
        while True:
            with self._cond:
                while not self._waiting[device] and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._waiting[device].popleft()
                job.state = STARTING
                self._cond.notify_all()
            try:
                self.execute(job)
                if not job.is_final:
                    job.state = DONE
            except Dream3DError as e:
                job.state, job.error = FAILED, safe_text(str(e).splitlines()[0] if str(e) else type(e).__name__,
                                                         ERROR_TEXT)
            except Exception as e:  # noqa: BLE001 - a bug: full traceback in the server log, one line in the page
                log.exception("run %s failed", job.run_dir)
                job.state, job.error = FAILED, (f"internal error ({type(e).__name__}: "
                                                f"{safe_text(e, ERROR_TEXT)}); see the server log")
            finally:
                job.finished = time.time()
                job.done_event.set()
                with self._cond:
                    self._cond.notify_all()

    # --- queries and control -----------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1-based place in the waiting line of its device; 0 once it has left the line."""
        with self._cond:
            q = self._waiting.get(job.device, deque())
            return q.index(job) + 1 if job in q else 0

    def active(self, owner: str, kind: str | None = None) -> list[Job]:
        """Unfinished jobs started by `owner` (of `kind` if given), oldest first."""
        with self._cond:
            jobs = list(self._jobs.values())
        return [j for j in jobs if j.owner == owner and not j.is_final and (kind is None or j.kind == kind)]

    def stop(self, job: Job) -> None:
        """Cancel a waiting job, or ask a running one to stop after its current step (it keeps what was made)."""
        with self._cond:
            q = self._waiting.get(job.device, deque())
            if job in q:
                q.remove(job)
                job.state, job.message, job.finished = STOPPED, "stopped before it started", time.time()
                job.done_event.set()
                self._cond.notify_all()
                return
        job.request_stop()

    def shutdown(self, timeout: float = 30.0) -> list[Job]:
        """Stop every job and the workers, waiting up to `timeout` s for running jobs to save their state (the
        checkpoint, then the export); returns the jobs still busy at the bound."""
        with self._cond:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.is_final:
                self.stop(job)
        with self._cond:
            self._cond.notify_all()
        deadline = time.time() + timeout
        for threads in self._workers.values():
            for t in threads:
                t.join(max(0.0, deadline - time.time()))
        return [job for job in jobs if not job.done_event.is_set()]
