"""The generation pipeline: stages -> export, with one event stream (`dream3d.events`).

- `run_generation`: train a config's stage(s) in a run folder, then export (CLI, app and batch call it);
- `export_run`: export a run folder (`dream3d export`);
- `generation_config`: a new run's config (the recipe of the prior's kind unless one is given);
- `mesh_stage_config`, `edit_config`: the configs of `dream3d refine` and `dream3d edit` (`mesh_stage_of`: the
  mesh stage of a config, its run folder named but not read).
"""

from __future__ import annotations

from dream3d.pipeline.export import export_run
from dream3d.pipeline.generation import Generation, run_generation
from dream3d.pipeline.stage_configs import (edit_config, generation_config, mesh_stage_config, mesh_stage_of,
                                            recipe_for_prior)

__all__ = ["Generation", "edit_config", "export_run", "generation_config", "mesh_stage_config", "mesh_stage_of",
           "recipe_for_prior", "run_generation"]
