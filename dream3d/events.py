"""The typed event stream of a generation: what the trainer and the pipeline tell the front ends.

One `Event` type for every stage (NeRF, mesh, edit) and for the export that follows, so the CLI's progress bar,
the app's job view and batch's worker messages are translations of the same stream.

Example:
    >>> def on_event(e: Event) -> None:
    ...     if e.kind == "step":
    ...         print(e.step, e.steps, e.metrics.get("loss"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

EventKind = Literal["phase", "start", "step", "preview", "checkpoint", "done", "stopped", "export", "exported"]

PHASES: dict[str, str] = {
    "prior": "loading the prior",
    "mesh_init": "initialising the mesh stage from the NeRF run (carving, signed distance, albedo fit)",
    "first_step": "first step (a C++ kernel is compiled on its first use: up to a minute)",
    "export": "exporting the mesh",
    "turntable": "rendering the turntable",
}
"""The long phases of a run that are announced by a "phase" event (`Event.phase`), in words."""


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run.

    kind: phase (a long phase began: `phase` names it, one of PHASES; it lasts until the next event) |
        start (a stage began or resumed) | step (one optimisation step finished; `metrics` holds its floats) |
        preview (a preview image was written to `path`) | checkpoint | done | stopped (the stage ended) |
        export (the export of the finished stage began) | exported (it ended; `path` is the export folder).
    step, steps: the stage's step counter and its total. run_dir: the stage's run folder. stage: "nerf" | "mesh".
    resumed: on start, whether a checkpoint was restored. phase: on phase, the phase's name (a key of PHASES).
    """

    kind: EventKind
    step: int
    steps: int
    run_dir: Path
    stage: str = "nerf"
    resumed: bool = False
    path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    phase: str = ""

    @property
    def message(self) -> str:
        """The phase in words (empty for events that are not phases)."""
        return PHASES.get(self.phase, self.phase.replace("_", " "))


EventCallback = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The default event callback: drops every event."""
