"""Rendering: volume rendering with an occupancy grid (torch marcher everywhere, nerfacc on CUDA), shading."""

from dream3d.render.occupancy import OccupancyGrid
from dream3d.render.shading import SHADINGS, shade
from dream3d.render.volume import VolumeRenderer

__all__ = ["VolumeRenderer", "OccupancyGrid", "SHADINGS", "shade"]
