"""What a worker thread does with one job: train (Trainer), export the state reached, package the OBJ."""

from __future__ import annotations

import time

from dream3d.app.jobs import DONE, EXPORTING, STOPPED, Job
from dream3d.app.runs import obj_zip


def run_job(job: Job, preview_seconds: float = 3.0) -> None:
    """Run `job` to its end: `train_stages` (both stages of a two-stage recipe; job.run_dir follows the stage
    running), then (done or stopped after >= 1 step) export_run + OBJ zip of the last stage.

    preview_seconds: besides the config's `preview_every`, render a preview when this many seconds have passed
    since the last one (0 disables), so the page refreshes every few seconds whatever the step time.
    Sets job.state to "done" or "stopped"; a user mistake raises Dream3DError (the manager records it).
    """
    from dream3d.trainer import train_stages

    last = [time.monotonic()]
    trainer = None

    def events(e: dict) -> None:
        job.on_event(e)
        if e["type"] == "preview":
            last[0] = time.monotonic()
        elif (e["type"] == "step" and preview_seconds > 0 and e["step"] < e["steps"]
              and time.monotonic() - last[0] >= preview_seconds):
            trainer.preview()  # in the training thread, between two steps

    def follow(t) -> None:  # each stage's trainer (a two-stage recipe goes on in `<run>-mesh`)
        nonlocal trainer
        trainer = t
        job.run_dir = t.run_dir
        job.attach(t)

    first_dir = job.run_dir
    try:
        state, trainer = train_stages(job.cfg, job.run_dir, events=events, on_trainer=follow, handle_signals=False)
    except BaseException:
        if first_dir.is_dir() and not any(first_dir.iterdir()):
            first_dir.rmdir()  # the folder reserved for it stays empty: leave no trace in the gallery
        raise
    if state == STOPPED:
        job.message = f"stopped at step {trainer.step}/{trainer.cfg.steps}"
    if trainer.cfg.export.enabled and trainer.step > 0:
        from dream3d.export_run import export_run

        job.state = EXPORTING
        export_run(trainer.run_dir, trainer=trainer)
        obj_zip(trainer.run_dir)
    job.state = DONE if state == "done" else STOPPED
