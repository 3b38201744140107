"""The stages a run can be: each registered once with how to build its renderer, optimise it, start it and
export it. `stage: nerf` (volume rendering of a hash-grid NeRF), `stage: mesh` (DMTet + rasterizer, started
from a finished NeRF run) and `stage: gaussian` (3D Gaussians, splatted) are registered here; a new stage is one module with a `Stage` subclass, registered
below, plus its recipe in configs/.

Example:
    >>> get_stage("nerf").starts_from is None
    True
"""

from __future__ import annotations

from dream3d.errors import ConfigError
from dream3d.stages.base import Stage
from dream3d.stages.gaussian import GaussianStage
from dream3d.stages.mesh import MeshStage
from dream3d.stages.nerf import NerfStage

_STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Add `stage` to the registry under `stage.name` (config validation and `--help` read it)."""
    _STAGES[stage.name] = stage
    return stage


def stage_names() -> tuple[str, ...]:
    return tuple(_STAGES)


def get_stage(name: str) -> Stage:
    """The registered stage `name`; ConfigError naming the known ones otherwise."""
    if name not in _STAGES:
        raise ConfigError(f"unknown stage {name!r}; known stages: {', '.join(_STAGES)}")
    return _STAGES[name]


def build_renderer(cfg):
    """The renderer (geometry + background, on the CPU) of `cfg.stage`, as `cfg` describes it."""
    return get_stage(cfg.stage).build_renderer(cfg)


register_stage(NerfStage())
register_stage(MeshStage())
register_stage(GaussianStage())

__all__ = ["Stage", "build_renderer", "get_stage", "register_stage", "stage_names"]
