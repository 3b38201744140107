"""One batch job, run inside a worker (a spawned process or a Ray task): the ordinary generation path.

`run_job` runs the job's resolved config in its run folder through the generation pipeline
(`dream3d.pipeline.run_generation`, as `dream3d generate` does: a folder that holds a checkpoint is resumed
from it, a two-stage recipe goes on in `<run>-mesh`, the last stage is exported; the worker's prior is reused
across its jobs), renders a thumbnail, and reports events through `emit`. Any exception becomes a "failed"
result with a one-line error (the full traceback goes to the run's error log), so one bad job never stops the
worker. The worker holds the run folder's lock while it runs the job (`RunFolder.locked`): a job that another
process is running (a second `dream3d batch` on the same folder) is left to it and reported as "taken".

Events (dicts, all with "type" and "job"):
  started    {host, pid}                     the worker took the job
  training   {step, steps, resumed}          the trainer started (step > 0: resumed from its checkpoint)
  progress   {step, steps, phase}            at most every PROGRESS_EVERY_S seconds, and when exporting
  checkpoint {step, steps}
  finished   {state: done|failed|interrupted|taken, error, step, steps, outputs, seconds}
             (taken: another process holds the run's lock; error names it; nothing was written)
"""

from __future__ import annotations

import gc
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Callable

from dream3d.errors import one_line

PROGRESS_EVERY_S = 0.5
THUMBNAIL_SIZE = 128
PRIOR_MUTATING_METHODS = ("vsd", "esd")  # they add a LoRA and a hook to the prior's UNet: such jobs load their own
_prior_cache: dict[tuple[str, str, str], object] = {}  # this worker's last prior, reused by its next jobs


def set_threads(threads: int) -> None:
    """CPU threads for this worker's torch (intra-op) pool."""
    import torch
    torch.set_num_threads(max(1, int(threads)))


def write_thumbnail(trainer, path: Path, size: int = THUMBNAIL_SIZE) -> Path:
    """A front view (elevation 20 degrees, lambertian, size x size px) of the trained scene as PNG."""
    import torch

    from dream3d.cameras import orbit_cameras
    from dream3d.fileio import save_image

    trainer.renderer.eval()
    with torch.no_grad():
        out = trainer.renderer.render_chunked(orbit_cameras(1, 20.0).to(trainer.device), size, size,
                                              shading="lambertian")
    save_image(out.rgb, path)
    return path


def shared_prior(cfg):
    """The prior for `cfg`, loaded once per worker and reused by jobs with the same prior and device (None for
    methods that modify the prior; the Trainer then loads a fresh one). Only the last prior is kept."""
    if cfg.guidance.method in PRIOR_MUTATING_METHODS:
        return None
    from dream3d.priors import load_prior
    from dream3d.system import resolve_device

    device = resolve_device(cfg.device)
    key = (cfg.prior, str(device), repr(cfg.prior_memory))
    if key not in _prior_cache:
        _prior_cache.clear()
        _prior_cache[key] = load_prior(cfg.prior or None, device=device, memory=cfg.prior_memory)
    return _prior_cache[key]


def run_job(job, run_dir: str | Path, emit: Callable[[dict], None],
            should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Run (or resume) one `jobs.Job` in `run_dir` holding its lock; returns the "finished" event (also emitted)."""
    from dream3d.run_folder import RunFolder, RunInUse

    run = RunFolder(run_dir)
    t0 = time.time()
    try:
        with run.locked("dream3d batch"):
            return _run_locked(job, run, emit, should_stop, t0)
    except RunInUse as e:
        state, error = "taken", one_line(e)
    except Exception as e:  # noqa: BLE001 - the lock itself could not be taken (a folder that cannot be written)
        state, error = "failed", one_line(e)
    result = {"type": "finished", "job": job.name, "state": state, "error": error, "step": None,
              "steps": job.steps, "outputs": {}, "seconds": round(time.time() - t0, 3)}
    emit(result)
    return result


def _run_locked(job, run, emit: Callable[[dict], None], should_stop: Callable[[], bool], t0: float) -> dict:
    base = {"job": job.name}
    emit({"type": "started", **base, "host": socket.gethostname(), "pid": os.getpid()})
    step = [0]
    last = {"t": 0.0}

    def on_event(e) -> None:
        step[0] = e.step
        if e.kind == "start":
            emit({"type": "training", **base, "step": e.step, "steps": e.steps, "resumed": e.resumed})
        elif e.kind == "checkpoint":
            emit({"type": "checkpoint", **base, "step": e.step, "steps": e.steps})
        elif e.kind == "step" and time.time() - last["t"] >= PROGRESS_EVERY_S:
            last["t"] = time.time()
            emit({"type": "progress", **base, "step": e.step, "steps": e.steps, "phase": "train"})
        elif e.kind == "export":
            emit({"type": "progress", **base, "step": e.step, "steps": job.steps, "phase": "export"})
        elif e.kind == "phase":  # a long phase: the live table shows its name
            emit({"type": "progress", **base, "step": e.step, "steps": e.steps, "phase": e.phase.replace("_", " ")})

    result = {"type": "finished", **base, "state": "failed", "error": "", "step": 0, "steps": job.steps,
              "outputs": {}}
    try:
        if job.error:
            from dream3d.errors import Dream3DError
            raise Dream3DError(job.error)
        from dream3d.pipeline import run_generation

        generation = run_generation(job.cfg, run, prior=shared_prior(job.cfg), events=on_event,
                                    should_stop=should_stop, stop_reason="interrupted")
        if generation.state != "done":
            result["state"] = "interrupted"
        else:
            outputs = {k: str(v) for k, v in (generation.exported or {"files": {}})["files"].items()}
            outputs["thumbnail"] = str(write_thumbnail(generation.trainer, run.thumbnail))
            result.update(state="done", outputs=outputs)
        result["step"] = generation.trainer.step
    except KeyboardInterrupt:  # a Ray cancel, or Ctrl-C outside the trainer's signal handling
        result.update(state="interrupted", step=step[0])
    except Exception as e:  # noqa: BLE001 - isolation: any failure is recorded and the batch goes on
        result.update(state="failed", error=one_line(e), step=step[0])
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            run.error_log.write_text(traceback.format_exc())
        except OSError:
            pass
    finally:
        generation = None  # free the scene (and GPU memory) before the next job
        gc.collect()
        _empty_cuda_cache()
    result["seconds"] = round(time.time() - t0, 3)
    emit(result)
    return result


def _empty_cuda_cache() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
