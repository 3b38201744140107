"""The interface the trainer, the exporters and the previews see of a renderer."""

from __future__ import annotations

from typing import Protocol

import torch

from dream3d.cameras import Cameras
from dream3d.geometry.protocol import Geometry
from dream3d.render.output import RenderOut


class Renderer(Protocol):
    """Turns cameras into images of its geometry over its background (an `nn.Module`: `VolumeRenderer`,
    `MeshRenderer`). shading: "albedo" | "lambertian" | "textureless"."""

    geometry: Geometry
    background: torch.nn.Module

    def __call__(self, cams: Cameras, height: int, width: int, shading: str = "albedo",
                 generator: torch.Generator | None = None, stratified: bool | None = None) -> RenderOut:
        """A differentiable render of B cameras (training: stratified ray jitter drawn on `generator`)."""

    def render_chunked(self, cams: Cameras, height: int, width: int, shading: str = "albedo") -> RenderOut:
        """An evaluation render (no grad, no jitter) at any size, for previews, turntables and exports."""

    def update_occupancy(self, step: int, generator: torch.Generator | None = None) -> bool:
        """The per-step hook of the training loop (the volume renderer refreshes its occupancy grid)."""

    def stats(self) -> dict[str, float]:
        """Figures for the metrics log (the volume renderer's occupied fraction; {} for a mesh)."""
