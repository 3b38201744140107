"""The run configs a generation starts from: `generation_config` (a new run: the recipe that suits the prior),
and the stages that start from a finished run: `dream3d refine` (the mesh stage of a NeRF run) and `dream3d edit`
(DDS editing of a run towards a new prompt).

A new run without `--config` takes the recipe of its prior's kind: the bundled (or any shapes-world) prior the
CPU default (`cpu-default`), a latent Stable-Diffusion-style prior `sd-<method>` (`sd-sds` unless
`guidance.method` names another method that has an `sd-` recipe), a pixel DeepFloyd-IF-style prior `if-<method>`
likewise. A guidance scale that neither the recipe nor the overrides set is the prior's own
(`dream3d.priors.kinds.distillation_scale`: its metadata's, else 101 latent / 21 pixel).

The mesh stage's config is the NeRF run's config <- the `mesh` recipe (or `--config FILE|RECIPE`) <- the NeRF run's
`mesh.refine_overrides` <- command-line `key=value` overrides <- `--steps` (else the NeRF run's
`mesh.refine_steps` when set), with `stage: mesh` and `init_from` = the NeRF run. Its run folder defaults to
`<NeRF run>-mesh`, next to the NeRF run (a fixed name, so that an interrupted two-stage run resumes there).

An edit's config is the source run's config <- the `dds-edit` recipe (or `--config FILE|RECIPE`) <- overrides, with
method dds, the target prompt, the source's prompt as `source_prompt` (unless given) and `edit_source` = the run.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dream3d.config import RunConfig, load_config
from dream3d.errors import Dream3DError
from dream3d.priors.kinds import inspect_prior
from dream3d.recipes import config_file, recipe_names, recipe_path
from dream3d.run_folder import RunFolder

KIND_PREFIX = {"latent": "sd-", "pixel": "if-"}
CPU_DEFAULT = "cpu-default"


def recipe_for_prior(kind: str, method: str = "sds") -> str:
    """The shipped recipe for a prior of `kind` ("shapes" | "latent" | "pixel") and a guidance method."""
    prefix = KIND_PREFIX.get(kind)
    if prefix is None:
        return CPU_DEFAULT
    names = recipe_names()
    return prefix + method if prefix + method in names else prefix + "sds"


def _sets_scale(path: Path | None, overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether the recipe file or an override gives `guidance.guidance_scale`."""
    if any(o.split("=", 1)[0].strip() == "guidance.guidance_scale" for o in overrides):
        return True
    if path is None:
        return False
    data = yaml.safe_load(path.read_text()) or {}
    section = data.get("guidance") if isinstance(data, dict) else None
    return isinstance(section, dict) and "guidance_scale" in section


def generation_config(config: str | Path | None = None,
                      overrides: list[str] | tuple[str, ...] = ()) -> tuple[RunConfig, str]:
    """(the RunConfig of a new generation, one line saying which recipe and scale it uses).

    config: a recipe file or a shipped recipe's name; None picks the recipe of the prior's kind (module doc).
    overrides: `key=value` items (`prior=...`, `guidance.method=...` included). ConfigError / ModelLoadError (one
    line) for mistakes.
    """
    path = config_file(config)
    cfg = load_config(path, overrides)
    if path is not None and _sets_scale(path, overrides):
        return cfg, f"config {path}"  # nothing to read from the prior
    info = inspect_prior(cfg.prior or None)
    if path is None:
        name = recipe_for_prior(info.kind, cfg.guidance.method)
        path = recipe_path(name)
        cfg = load_config(path, overrides)
        chosen = f"recipe {name} for {info.describe()} (--config chooses another)"
    else:
        chosen = f"config {path}"
    if not _sets_scale(path, overrides):
        cfg.guidance.guidance_scale = info.guidance_scale
        chosen += f"; guidance scale {info.guidance_scale:g}, the prior's default"
    return cfg, chosen


def mesh_stage_config(source: str | Path, config: str | Path | None = None, overrides: list[str] = (),
                      steps: int | None = None) -> RunConfig:
    """The mesh-stage RunConfig refining the finished NeRF run folder `source` (see module doc)."""
    run = RunFolder(source)
    src = run.read_config()
    if src.stage != "nerf":
        raise Dream3DError(f"{source} is a {src.stage} run; dream3d refine starts from a NeRF run")
    if not run.has_checkpoint():
        raise Dream3DError(f"{source} has no checkpoint yet; finish (or resume) the NeRF run first")
    return mesh_stage_of(src, str(run.path.resolve()), config, overrides, steps)


def mesh_stage_of(src: RunConfig, init_from: str, config: str | Path | None = None, overrides: list[str] = (),
                  steps: int | None = None) -> RunConfig:
    """The mesh-stage RunConfig of a NeRF run with config `src` whose folder is `init_from` (the folder is not
    read: the app checks a two-stage recipe's second stage with it before the first one runs)."""
    recipe = config_file(config) if config else recipe_path("mesh")
    over = [*src.mesh.refine_overrides, *overrides, "mesh.refine_steps=0", "mesh.refine_overrides=[]"]
    if steps is not None:
        over.append(f"steps={steps}")
    elif src.mesh.refine_steps > 0:
        over.append(f"steps={src.mesh.refine_steps}")
    base = load_config(None, [], base=src)
    base.stage, base.init_from, base.name = "mesh", init_from, ""
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
