"""`stage: nerf`: a hash-grid NeRF rendered by volume rendering; exported by marching cubes + baked albedo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dream3d.render.protocol import Renderer
from dream3d.stages.base import Stage, build_background

if TYPE_CHECKING:
    from dream3d.config import RunConfig


class NerfStage(Stage):
    name = "nerf"
    description = "hash-grid NeRF, volume rendered"

    def build_renderer(self, cfg: RunConfig) -> Renderer:
        from dream3d.geometry.implicit_volume import ImplicitVolume
        from dream3d.render.volume import VolumeRenderer

        g, r = cfg.geometry, cfg.render
        geometry = ImplicitVolume(bound=g.bound, n_levels=g.n_levels, n_features_per_level=g.n_features_per_level,
                                  log2_hashmap_size=g.log2_hashmap_size, base_resolution=g.base_resolution,
                                  per_level_scale=g.per_level_scale, mlp_width=g.mlp_width,
                                  blob_density=g.blob_density, blob_radius=g.blob_radius,
                                  normal_type=g.normal_type, encoding_backend=g.encoding_backend)
        return VolumeRenderer(geometry, build_background(cfg), num_samples_per_ray=r.samples_per_ray,
                              grid_resolution=r.occupancy_resolution, occ_update_every=r.occupancy_update_every,
                              backend=r.backend)

    def param_groups(self, renderer: Renderer, cfg: RunConfig) -> list[dict]:
        o = cfg.optim
        return [{"params": list(renderer.geometry.encoding.parameters()), "lr": o.lr * o.encoding_lr_multiplier}]

    def export(self, renderer: Renderer, out_dir: Path, formats: list[str], resolution: int,
               texture_size: int, cfg: RunConfig | None = None) -> dict:
        from dream3d.export import export_geometry

        return export_geometry(renderer.geometry, out_dir, formats=formats, resolution=resolution,
                               texture_size=texture_size)
