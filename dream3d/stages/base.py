"""What a stage provides to the trainer and the exporter (see `dream3d.stages`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dream3d.errors import ConfigError
from dream3d.geometry.background import MLPBackground, SolidBackground
from dream3d.render.protocol import Renderer

if TYPE_CHECKING:
    from dream3d.config import RunConfig


def build_background(cfg: RunConfig) -> torch.nn.Module:
    """`render.background`: white (a fixed colour) or mlp (a small learned environment)."""
    return SolidBackground() if cfg.render.background == "white" else MLPBackground()


class Stage(ABC):
    """One kind of run. Subclasses set `name`, `description` and `starts_from` and implement the methods.

    starts_from: the stage a fresh run of this one is initialised from (the run folder in `cfg.init_from`), or
    None when it starts from scratch.
    """

    name: str = ""
    description: str = ""
    starts_from: str | None = None

    @abstractmethod
    def build_renderer(self, cfg: RunConfig) -> Renderer:
        """The stage's geometry and background inside its renderer, on the CPU."""

    @abstractmethod
    def param_groups(self, renderer: Renderer, cfg: RunConfig) -> list[dict]:
        """Adam groups for the geometry's own learning rates; the trainer adds every other parameter at
        `optim.lr` in one last group."""

    def initialize(self, renderer: Renderer, source: Renderer, cfg: RunConfig) -> dict:
        """Start a fresh run from the finished `source` run's renderer (stages with `starts_from`); returns a
        JSON-serialisable record of what was done."""
        raise ConfigError(f"the {self.name} stage does not start from another run")

    def after_step(self, renderer: Renderer, optimizer: torch.optim.Optimizer, cfg: RunConfig, step: int,
                   generator: torch.Generator) -> dict[str, float]:
        """The trainer's hook after each optimizer step (`step`: steps done, counting this one): a stage whose
        parameters change shape (the Gaussian stage's densification) edits them and the optimizer's state here,
        drawing any randomness from `generator` (checkpointed). Returns figures for the metrics log."""
        return {}

    @abstractmethod
    def export(self, renderer: Renderer, out_dir: Path, formats: list[str], resolution: int,
               texture_size: int, cfg: RunConfig | None = None) -> dict:
        """Write the textured meshes into `out_dir` (cfg: the run's config, for a stage's own export settings);
        returns {"files": {kind: Path}, "stats": {...}}."""
