"""Ray runner: every job is a Ray task (one GPU each where the cluster has GPUs, else one CPU).

`ray` is imported only here, only when `--ray` is used (`pip install 'dream3d[distributed]'`). With an address
(`--ray auto`, `--ray ray://head:10001`, `--ray head:6379`) the tasks go to that cluster and run folders are
written where the driver says, so the batch folder must be on a file system every node shares. Without an
address a local Ray is started with `num_cpus` CPUs. Tasks send their events (started, progress, checkpoint)
through a `ray.util.queue.Queue`, so the driver aggregates progress and owns the manifest; a task's return value
is its final result. Ctrl-C cancels the tasks (their trainers checkpoint) and leaves them pending.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from dream3d.errors import Dream3DError

LOCAL_OBJECT_STORE_BYTES = 128 * 2**20  # jobs pass only small configs and results
CANCEL_GRACE_S = 30.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise Dream3DError("--ray needs Ray: pip install 'dream3d[distributed]' (or pip install 'ray>=2.30')") \
            from None
    return ray


def _ray_task(job, run_dir: str, events, threads: int) -> dict:
    """Body of one Ray task: the same `run_job` as local workers, events into the driver's queue."""
    from dream3d.batch.worker import run_job, set_threads
    from dream3d.console import quiet_libraries

    quiet_libraries()
    set_threads(threads)

    def emit(e: dict) -> None:
        try:
            events.put_nowait(e)
        except Exception:  # noqa: BLE001 - progress is best effort; the return value carries the result
            pass

    return run_job(job, run_dir, emit)


class RayRunner:
    """Runs jobs as Ray tasks on the cluster at `address` (None: a local Ray with `num_cpus` CPUs)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_job: int = 1):
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_job = cpus_per_job

    def _init(self, ray) -> bool:
        if ray.is_initialized():
            return False
        common = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address:
                ray.init(address=self.address, **common)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
        except ConnectionError as e:
            raise Dream3DError(f"cannot connect to the Ray cluster at {self.address!r}: {e}") from None
        return True

    def run(self, jobs: Sequence, run_dirs: dict[str, str], on_event: Callable[[dict], None]) -> None:
        """Submit every job, forward events and results to `on_event` until all have finished."""
        if not jobs:
            return
        ray = import_ray()
        from ray.util.queue import Empty, Queue

        started_here = self._init(ray)
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            events = Queue(actor_options={"num_cpus": 0})
            task = ray.remote(_ray_task).options(num_cpus=self.cpus_per_job, num_gpus=1 if gpus else 0,
                                                 max_retries=0)
            refs = {task.remote(job, run_dirs[job.name], events, self.cpus_per_job): job for job in jobs}

            reported: set[str] = set()  # jobs whose "finished" event came through the queue

            def drain() -> None:
                try:
                    batch = events.get_nowait_batch(events.qsize())
                except Empty:
                    return
                for e in batch:
                    if e["type"] == "finished":
                        reported.add(e["job"])
                    on_event(e)

            cancelled_at = None
            while refs:
                try:
                    drain()
                    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
                    if ready:
                        drain()  # a job's last events, its result included, in the order they were sent
                    for ref in ready:
                        job = refs.pop(ref)
                        if job.name in reported:
                            continue
                        try:
                            result = ray.get(ref)
                        except ray.exceptions.TaskCancelledError:
                            result = {"type": "finished", "job": job.name, "state": "interrupted", "step": None}
                        except ray.exceptions.RayError as e:  # the worker process or its node died
                            from dream3d.errors import one_line
                            result = {"type": "finished", "job": job.name, "state": "failed", "step": None,
                                      "error": f"Ray task failed: {one_line(e)}", "outputs": {}}
                        on_event(result)
                    if cancelled_at is not None and time.time() - cancelled_at > CANCEL_GRACE_S:
                        break
                except KeyboardInterrupt:
                    if cancelled_at is not None:
                        raise
                    cancelled_at = time.time()
                    for ref in refs:
                        ray.cancel(ref)
            if cancelled_at is not None:
                raise KeyboardInterrupt
        finally:
            if started_here:
                ray.shutdown()
