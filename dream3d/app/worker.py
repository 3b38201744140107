"""What a worker thread does with one job: train (Trainer), export the state reached, package the OBJ."""

from __future__ import annotations

import time

from dream3d.app.jobs import DONE, EXPORTING, STOPPED, Job
from dream3d.app.runs import obj_zip


def run_job(job: Job, preview_seconds: float = 3.0) -> None:
    """Run `job` to its end: Trainer.train, then (done or stopped after >= 1 step) export_run + OBJ zip.

    preview_seconds: besides the config's `preview_every`, render a preview when this many seconds have passed
    since the last one (0 disables), so the page refreshes every few seconds whatever the step time.
    Sets job.state to "done" or "stopped"; a user mistake raises Dream3DError (the manager records it).
    """
    from dream3d.trainer import Trainer

    last = [time.monotonic()]

    def events(e: dict) -> None:
        job.on_event(e)
        if e["type"] == "preview":
            last[0] = time.monotonic()
        elif (e["type"] == "step" and preview_seconds > 0 and e["step"] < e["steps"]
              and time.monotonic() - last[0] >= preview_seconds):
            trainer.preview()  # in the training thread, between two steps

    try:
        trainer = Trainer(job.cfg, job.run_dir, events=events)
    except BaseException:
        if job.run_dir.is_dir() and not any(job.run_dir.iterdir()):
            job.run_dir.rmdir()  # the folder reserved for it stays empty: leave no trace in the gallery
        raise
    job.attach(trainer)
    state = trainer.train(handle_signals=False)
    if state == STOPPED:
        job.message = f"stopped at step {trainer.step}/{job.cfg.steps}"
    if job.cfg.export.enabled and trainer.step > 0:
        from dream3d.export_run import export_run

        job.state = EXPORTING
        export_run(job.run_dir, trainer=trainer)
        obj_zip(job.run_dir)
    job.state = DONE if state == "done" else STOPPED
