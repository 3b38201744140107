"""The generation pipeline: stages -> export, with one event stream (`dream3d.events`).

- `run_generation`: train a config's stage(s) in a run folder, then export (CLI, app and batch call it);
- `export_run`: export a run folder (`dream3d export`);
- `mesh_stage_config`, `edit_config`: the configs of `dream3d refine` and `dream3d edit`.
"""

from __future__ import annotations

from dream3d.pipeline.export import export_run
from dream3d.pipeline.generation import Generation, run_generation
from dream3d.pipeline.stage_configs import edit_config, mesh_stage_config

__all__ = ["Generation", "edit_config", "export_run", "mesh_stage_config", "run_generation"]
