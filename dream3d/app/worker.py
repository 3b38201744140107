"""What a worker thread does with one job: the generation pipeline (stages, then the export of the state
reached), then the OBJ zip for the download."""

from __future__ import annotations

from dream3d.app.jobs import DONE, STOPPED, Job
from dream3d.app.runs import obj_zip
from dream3d.pipeline import run_generation


def run_job(job: Job, preview_seconds: float = 3.0) -> None:
    """Run `job` to its end: `run_generation` (both stages of a two-stage recipe; job.run_dir follows the stage
    running), exporting the last stage when it finished or was stopped after >= 1 step, then its OBJ zip.

    preview_seconds: besides the config's `preview_every`, a preview whenever this many seconds have passed since
    the last one (0 disables), so the page refreshes every few seconds whatever the step time.
    Sets job.state to "done" or "stopped"; a user mistake raises Dream3DError (the manager records it).
    """
    first_dir = job.run_dir
    try:
        result = run_generation(job.cfg, job.run_dir, events=job.on_event, should_stop=job.stop_requested.is_set,
                                stop_reason="stopped from the app", handle_signals=False, export_stopped=True,
                                preview_seconds=preview_seconds)
    except BaseException:
        if first_dir.is_dir() and not any(first_dir.iterdir()):
            first_dir.rmdir()  # the folder reserved for it stays empty: leave no trace in the gallery
        raise
    trainer = result.trainer
    if result.state == STOPPED:
        job.message = f"stopped at step {trainer.step}/{trainer.cfg.steps}"
    if result.exported is not None:
        obj_zip(result.run.path)
    job.state = DONE if result.state == "done" else STOPPED
