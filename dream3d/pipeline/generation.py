"""One generation: train the config's stage(s), then export — the path every front end (CLI, app, batch) takes.

A config runs its own stage (`stage: nerf`, or a mesh/edit config made by `dream3d.pipeline.stage_configs`);
a NeRF config with `mesh.refine_steps > 0` (a two-stage recipe) goes on, once its NeRF stage is done, with the
mesh stage in `<run>-mesh` (resumed there too; its folder's lock is held while it trains and exports). The export follows the last stage. Front ends only translate
the `Event` stream and decide when to stop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dream3d.config import RunConfig
from dream3d.events import Event, EventCallback, ignore_events
from dream3d.pipeline.export import export_run
from dream3d.pipeline.stage_configs import mesh_stage_config
from dream3d.priors.protocol import DiffusionPrior
from dream3d.run_folder import RunFolder
from dream3d.trainer import Trainer


@dataclass
class Generation:
    """How a generation ended. state: "done" | "stopped" (of the last stage that ran); trainer: that stage's
    trainer (its run folder, renderer and step); exported: export_run's result, or None when nothing was
    exported."""

    state: str
    trainer: Trainer
    exported: dict | None = None

    @property
    def run(self) -> RunFolder:
        return self.trainer.run


def run_generation(cfg: RunConfig, run: RunFolder | str | Path, prior: DiffusionPrior | None = None,
                   events: EventCallback = ignore_events, should_stop: Callable[[], bool] = lambda: False,
                   stop_reason: str = "stopped", handle_signals: bool = True, export_stopped: bool = False,
                   preview_seconds: float = 0.0, log: Callable[[str], None] = lambda m: None) -> Generation:
    """Train (or resume) `cfg` in `run`, its mesh stage when the recipe asks for one, and export the last stage.

    prior: a loaded prior to reuse (None: each stage loads `cfg.prior`). should_stop: polled at every event;
    once true the running stage stops after its current step (with `stop_reason` in its status) and no later
    stage starts. handle_signals: SIGINT/SIGTERM stop the run (main thread only). export_stopped: also export a
    stopped stage that made at least one step (the app); otherwise only a finished one is exported (when
    `export.enabled`). preview_seconds: besides `preview_every`, a preview whenever this many seconds passed
    since the last one (0: off). log: one-line messages of the export.
    """
    current: list[Trainer] = []

    def relay(e: Event) -> None:
        events(e)
        if current and should_stop():
            current[0].request_stop(stop_reason)

    run = run if isinstance(run, RunFolder) else RunFolder(run)
    trainer = Trainer(cfg, run, prior=prior, events=relay, preview_seconds=preview_seconds)
    current.append(trainer)
    state = trainer.train(handle_signals=handle_signals)
    with contextlib.ExitStack() as mesh_lock:  # the mesh stage's folder has its own writer lock
        if state == "done" and cfg.stage == "nerf" and cfg.mesh.refine_steps > 0 and not should_stop():
            mesh_lock.enter_context(run.mesh_stage.locked(f"the mesh stage of {run.name}"))
            mesh_prior = trainer.prior if not cfg.prior else None
            trainer = Trainer(mesh_stage_config(run.path), run.mesh_stage, prior=mesh_prior, events=relay,
                              preview_seconds=preview_seconds)
            current[0] = trainer
            state = trainer.train(handle_signals=handle_signals)
        result = Generation(state, trainer)
        wanted = state == "done" or (export_stopped and trainer.step > 0)
        if wanted and trainer.cfg.export.enabled:
            trainer.events(Event("export", trainer.step, trainer.cfg.steps, run_dir=trainer.run.path,
                                 stage=trainer.cfg.stage))
            result.exported = export_run(trainer.run, loaded=(trainer.cfg, trainer.renderer), log=log,
                                         events=trainer.events)
            trainer.events(Event("exported", trainer.step, trainer.cfg.steps, run_dir=trainer.run.path,
                                 stage=trainer.cfg.stage, path=trainer.run.export))
    return result
