"""`dream3d refine`: the mesh stage's run config, made from a finished NeRF run.

The mesh stage's config is the NeRF run's config <- `configs/mesh.yaml` (or `--config FILE|RECIPE`) <- the NeRF run's
`mesh.refine_overrides` <- command-line `key=value` overrides <- `--steps` (else the NeRF run's
`mesh.refine_steps` when set), with `stage: mesh` and `init_from` = the NeRF run. Its run folder defaults to
`<NeRF run>-mesh`, next to the NeRF run (a fixed name, so that an interrupted two-stage run resumes there).
"""

from __future__ import annotations

from pathlib import Path

from dream3d.checkpoint import find_checkpoint
from dream3d.config import RunConfig, load_config
from dream3d.errors import Dream3DError
from dream3d.recipes import config_file, recipe_path


def mesh_stage_config(source: str | Path, config: str | Path | None = None, overrides: list[str] = (),
                      steps: int | None = None) -> RunConfig:
    """The mesh-stage RunConfig refining the finished NeRF run folder `source` (see module doc)."""
    from dream3d.trainer import resume_config

    source = Path(source)
    src = resume_config(source)
    if src.stage != "nerf":
        raise Dream3DError(f"{source} is a {src.stage} run; dream3d refine starts from a NeRF run")
    if find_checkpoint(source / "checkpoint") is None:
        raise Dream3DError(f"{source} has no checkpoint yet; finish (or resume) the NeRF run first")
    recipe = config_file(config) if config else recipe_path("mesh")
    over = [*src.mesh.refine_overrides, *overrides, "mesh.refine_steps=0", "mesh.refine_overrides=[]"]
    if steps is not None:
        over.append(f"steps={steps}")
    elif src.mesh.refine_steps > 0:
        over.append(f"steps={src.mesh.refine_steps}")
    base = load_config(None, [], base=src)
    base.stage, base.init_from, base.name = "mesh", str(source.resolve()), ""
    return load_config(recipe, over, base=base)


def mesh_run_dir(source: str | Path) -> Path:
    """The default mesh-stage run folder of a NeRF run: `<source>-mesh`."""
    source = Path(source)
    return source.with_name(source.name + "-mesh")
