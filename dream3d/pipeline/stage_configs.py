"""The run configs of the stages that start from a finished run: `dream3d refine` (the mesh stage of a NeRF run)
and `dream3d edit` (DDS editing of a run towards a new prompt).

The mesh stage's config is the NeRF run's config <- the `mesh` recipe (or `--config FILE|RECIPE`) <- the NeRF run's
`mesh.refine_overrides` <- command-line `key=value` overrides <- `--steps` (else the NeRF run's
`mesh.refine_steps` when set), with `stage: mesh` and `init_from` = the NeRF run. Its run folder defaults to
`<NeRF run>-mesh`, next to the NeRF run (a fixed name, so that an interrupted two-stage run resumes there).

An edit's config is the source run's config <- the `dds-edit` recipe (or `--config FILE|RECIPE`) <- overrides, with
method dds, the target prompt, the source's prompt as `source_prompt` (unless given) and `edit_source` = the run.
"""

from __future__ import annotations

from pathlib import Path

from dream3d.config import RunConfig, load_config
from dream3d.errors import Dream3DError
from dream3d.recipes import config_file, recipe_path
from dream3d.run_folder import RunFolder



def mesh_stage_config(source: str | Path, config: str | Path | None = None, overrides: list[str] = (),
                      steps: int | None = None) -> RunConfig:
    """The mesh-stage RunConfig refining the finished NeRF run folder `source` (see module doc)."""
    run = RunFolder(source)
    src = run.read_config()
    if src.stage != "nerf":
        raise Dream3DError(f"{source} is a {src.stage} run; dream3d refine starts from a NeRF run")
    if not run.has_checkpoint():
        raise Dream3DError(f"{source} has no checkpoint yet; finish (or resume) the NeRF run first")
    recipe = config_file(config) if config else recipe_path("mesh")
    over = [*src.mesh.refine_overrides, *overrides, "mesh.refine_steps=0", "mesh.refine_overrides=[]"]
    if steps is not None:
        over.append(f"steps={steps}")
    elif src.mesh.refine_steps > 0:
        over.append(f"steps={src.mesh.refine_steps}")
    base = load_config(None, [], base=src)
    base.stage, base.init_from, base.name = "mesh", str(run.path.resolve()), ""
    return load_config(recipe, over, base=base)


def edit_config(source: str | Path, prompt: str, source_prompt: str | None = None, config: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The RunConfig of a DDS edit of the finished run `source` towards `prompt` (see module doc)."""
    run = RunFolder(source)
    src_cfg = run.read_config()
    if not prompt or not prompt.strip():
        raise Dream3DError("give the target prompt, e.g. dream3d edit RUN_DIR --prompt \"a blue cube\"")
    cfg = load_config(config_file(config) if config else recipe_path("dds-edit"), overrides, base=src_cfg)
    cfg.guidance.method = "dds"
    cfg.prompt, cfg.name = prompt, ""
    cfg.guidance.dds.source_prompt = source_prompt or src_cfg.prompt
    cfg.edit_source = str(run.path.resolve())
    return cfg
