"""`stage: mesh`: a DMTet surface (sdf + deformation on a tet grid, hash-grid albedo) rendered by rasterization,
started from a finished NeRF run (`dream3d.stages.nerf_to_dmtet`); exported as the optimised mesh itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dream3d.render.protocol import Renderer
from dream3d.stages.base import Stage, build_background

if TYPE_CHECKING:
    from dream3d.config import RunConfig


class MeshStage(Stage):
    name = "mesh"
    description = "DMTet mesh, rasterized, refined from a NeRF run"
    starts_from = "nerf"

    def build_renderer(self, cfg: RunConfig) -> Renderer:
        from dream3d.geometry.dmtet import DMTetGeometry
        from dream3d.render.mesh import MeshRenderer

        g, m = cfg.geometry, cfg.mesh
        background = build_background(cfg)
        geometry = DMTetGeometry(resolution=m.tet_resolution, bound=g.bound, deform_fraction=m.deform_fraction,
                                 n_levels=g.n_levels, n_features_per_level=g.n_features_per_level,
                                 log2_hashmap_size=g.log2_hashmap_size, base_resolution=g.base_resolution,
                                 per_level_scale=g.per_level_scale, mlp_width=g.mlp_width,
                                 encoding_backend=g.encoding_backend)
        return MeshRenderer(geometry, background, backend=m.backend, sdf_regularizer=m.sdf_regularizer,
                            normal_consistency=m.normal_consistency, sdf_anchor=m.sdf_anchor)

    def param_groups(self, renderer: Renderer, cfg: RunConfig) -> list[dict]:
        o, m = cfg.optim, cfg.mesh
        return renderer.geometry.param_groups(o.lr, m.sdf_lr, m.deform_lr, o.lr * o.encoding_lr_multiplier)

    def initialize(self, renderer: Renderer, source: Renderer, cfg: RunConfig) -> dict:
        """DMTet sdf and albedo from the NeRF renderer `source` (`init_from_nerf`); the background is copied
        when both are of the same kind."""
        from dream3d.stages.nerf_to_dmtet import init_from_nerf

        m = cfg.mesh
        stats = init_from_nerf(renderer.geometry, source.eval(), m.albedo_fit_steps, m.carve_views,
                               m.carve_resolution, seed=cfg.seed)
        if type(source.background) is type(renderer.background):
            renderer.background.load_state_dict(source.background.state_dict())
        return {**stats, "source": str(cfg.init_from)}

    def export(self, renderer: Renderer, out_dir: Path, formats: list[str], resolution: int,
               texture_size: int, cfg: RunConfig | None = None) -> dict:
        from dream3d.export.mesh_export import export_mesh_geometry

        return export_mesh_geometry(renderer.geometry, out_dir, formats=formats, texture_size=texture_size)
