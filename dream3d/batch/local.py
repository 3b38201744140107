"""Local runner: N spawned worker processes, each running one job at a time.

The parent hands a job to a worker when it reports ready, so it always knows which job each worker holds: a
worker that dies (segfault, out-of-memory kill) fails only its job and is replaced. Workers divide the CPU
(`max(1, cores // N)` torch threads each, capped by OMP_NUM_THREADS when set) and, with several GPUs, get one
GPU each (round robin over CUDA_VISIBLE_DEVICES). A worker dies with its parent (Linux PR_SET_PDEATHSIG, plus a
polling fallback), so killing the batch never leaves orphans writing into run folders.

Ctrl-C: the parent sets a stop flag; running trainers stop after their current step with a checkpoint (and
report "interrupted"); workers exit; the runner re-raises KeyboardInterrupt. A second Ctrl-C terminates them.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

PARENT_POLL_S = 0.5
EXIT_GRACE_S = 60.0


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """max(1, cores // workers), capped by OMP_NUM_THREADS when the user set it."""
    threads = max(1, cpu_count() // max(1, workers))
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


def gpu_ids() -> list[str]:
    """Visible CUDA devices as CUDA_VISIBLE_DEVICES entries ([] without CUDA)."""
    import torch
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return (visible if len(visible) == n else [str(i) for i in range(n)]) if n else []


def _die_with_parent(ppid: int) -> None:
    try:  # Linux: the kernel kills us when the parent dies
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            if os.getppid() != ppid:
                os._exit(1)
            time.sleep(PARENT_POLL_S)

    if os.getppid() != ppid:
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def worker_main(slot: int, ppid: int, inbox, events, stop, threads: int, gpu: str | None, log_path: str) -> None:
    """Entry of a worker process: take jobs from `inbox` until it yields None."""
    _die_with_parent(ppid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the trainer's own handler, or the parent's stop flag
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log = open(log_path, "a", buffering=1)  # library chatter goes to a log, not over the live table
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    from dream3d.batch.worker import run_job, set_threads
    from dream3d.console import quiet_libraries

    quiet_libraries()
    set_threads(threads)

    def emit(e: dict) -> None:
        events.put({**e, "slot": slot})

    emit({"type": "ready"})
    while True:
        item = inbox.get()
        if item is None:
            break
        job, run_dir = item
        run_job(job, run_dir, emit, should_stop=stop.is_set)
        emit({"type": "ready"})


class LocalRunner:
    """Runs jobs in `workers` spawned processes; worker logs go to `log_dir/worker-<slot>.log`."""

    def __init__(self, workers: int, log_dir: str | Path):
        self.workers = max(1, workers)
        self.log_dir = Path(log_dir)

    def run(self, jobs: Sequence, run_dirs: dict[str, str], on_event: Callable[[dict], None]) -> None:
        """Run `jobs` (each in run_dirs[job.name]); every worker event goes to `on_event` in this process."""
        if not jobs:
            return
        ctx = mp.get_context("spawn")
        n = min(self.workers, len(jobs))
        threads, gpus = threads_per_worker(n), gpu_ids()
        events, stop = ctx.Queue(), ctx.Event()
        todo = collections.deque(jobs)
        procs: dict[int, mp.process.BaseProcess] = {}
        inboxes: dict[int, object] = {}
        current: dict[int, object] = {}
        stopping = False
        self.log_dir.mkdir(parents=True, exist_ok=True)

        def start(slot: int) -> None:
            inboxes[slot] = ctx.Queue()
            current[slot] = None
            gpu = gpus[slot % len(gpus)] if gpus else None
            procs[slot] = ctx.Process(target=worker_main, name=f"dream3d-batch-{slot}", daemon=True,
                                      args=(slot, os.getpid(), inboxes[slot], events, stop, threads, gpu,
                                            str(self.log_dir / f"worker-{slot}.log")))
            procs[slot].start()

        def dispatch(slot: int) -> None:
            job = todo.popleft() if todo and not stopping else None
            current[slot] = job
            inboxes[slot].put(None if job is None else (job, run_dirs[job.name]))

        def reap() -> None:  # workers that died without reporting their job
            for slot, p in list(procs.items()):
                if p.is_alive():
                    continue
                job = current.pop(slot, None)
                del procs[slot]
                if job is not None:
                    on_event({"type": "finished", "job": job.name, "state": "failed", "step": None, "outputs": {},
                              "error": f"the worker process died (exit code {p.exitcode}); "
                                       f"see {self.log_dir / f'worker-{slot}.log'}"})
                    if todo and not stopping:
                        start(slot)

        for slot in range(n):
            start(slot)
        try:
            while procs:
                try:
                    try:
                        e = events.get(timeout=0.5)
                    except queue.Empty:
                        reap()
                        continue
                    slot = e.pop("slot")
                    if e["type"] == "ready":
                        dispatch(slot)
                        continue
                    if e["type"] == "finished":
                        current[slot] = None
                    on_event(e)
                except KeyboardInterrupt:
                    if stopping:  # second Ctrl-C: do not wait for the current steps
                        for p in procs.values():
                            p.terminate()
                        raise
                    stopping = True
                    stop.set()
        finally:
            stop.set()
            for slot in procs:
                inboxes[slot].put(None)
            deadline = time.time() + EXIT_GRACE_S
            for p in procs.values():
                p.join(max(0.1, deadline - time.time()))
                if p.is_alive():
                    p.kill()
        if stopping:
            raise KeyboardInterrupt
