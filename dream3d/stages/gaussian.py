"""`stage: gaussian`: 3D Gaussians (`dream3d.geometry.gaussians`) splatted over the background
(`dream3d.render.gaussian`), densified and pruned on a schedule after the optimizer steps; exported as the mesh
of their density field with a baked texture, plus the Gaussians as a 3DGS `.ply` (`dream3d.export.gaussian_export`).

Optimizer groups follow 3DGS/DreamGaussian: one per attribute with its own learning rate (the group's "name" is
the attribute); the means' learning rate decays exponentially from `gaussian.position_lr` to
`position_lr_final` over `position_lr_steps` steps (set here after every step, saved with the optimizer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dream3d.render.protocol import Renderer
from dream3d.stages.base import Stage, build_background

if TYPE_CHECKING:
    from dream3d.config import RunConfig


def position_lr(cfg: RunConfig, steps_done: int) -> float:
    """The means' learning rate after `steps_done` steps: log-linear from position_lr to position_lr_final."""
    g = cfg.gaussian
    t = min(1.0, steps_done / max(1, g.position_lr_steps))
    if g.position_lr <= 0 or g.position_lr_final <= 0:
        return g.position_lr * (1 - t) + g.position_lr_final * t
    return math.exp(math.log(g.position_lr) * (1 - t) + math.log(g.position_lr_final) * t)


def densifies_at(cfg: RunConfig, step: int) -> bool:
    """Whether the cloud is densified and pruned after step `step` (1-based)."""
    g = cfg.gaussian
    return g.densify_from <= step <= g.densify_until and step % g.densify_every == 0


class GaussianStage(Stage):
    name = "gaussian"
    description = "3D Gaussians, splatted, densified and pruned"

    def build_renderer(self, cfg: RunConfig) -> Renderer:
        from dream3d.geometry.gaussians import GaussianCloud
        from dream3d.render.gaussian import GaussianRenderer

        g = cfg.gaussian
        cloud = GaussianCloud(g.num_points, cfg.geometry.bound, g.init_radius, g.init_opacity, g.sh_degree,
                              g.color, seed=cfg.seed)
        return GaussianRenderer(cloud, build_background(cfg), backend=g.backend, eps2d=g.eps2d,
                                near_plane=g.near_plane)

    def param_groups(self, renderer: Renderer, cfg: RunConfig) -> list[dict]:
        g, c = cfg.gaussian, renderer.geometry
        lrs = {"means": g.position_lr, "log_scales": g.scale_lr, "quats": g.rotation_lr,
               "opacity_logits": g.opacity_lr, "colors": g.color_lr, "sh_rest": g.color_lr / 20.0}
        return [{"params": [getattr(c, name)], "lr": lr, "name": name} for name, lr in lrs.items()]

    def after_step(self, renderer: Renderer, optimizer: torch.optim.Optimizer, cfg: RunConfig, step: int,
                   generator: torch.Generator) -> dict[str, float]:
        """Densification statistics of this step's render, the schedule's densify/prune and opacity reset, and
        the means' learning rate for the next step."""
        g, cloud = cfg.gaussian, renderer.geometry
        info: dict[str, float] = {}
        renderer.take_statistics(accumulate=step <= g.densify_until)
        if densifies_at(cfg, step):
            counts = cloud.densify_and_prune(optimizer, g.densify_grad_threshold, g.percent_dense * g.scene_extent,
                                             g.prune_opacity, g.prune_world_fraction * g.scene_extent,
                                             g.prune_screen_fraction, generator, g.max_gaussians)
            info.update(counts)
        if g.opacity_reset_every and step <= g.densify_until and step % g.opacity_reset_every == 0:
            cloud.reset_opacity(optimizer)
        for group in optimizer.param_groups:
            if group.get("name") == "means":
                group["lr"] = position_lr(cfg, step)
        return info

    def export(self, renderer: Renderer, out_dir: Path, formats: list[str], resolution: int,
               texture_size: int, cfg: RunConfig | None = None) -> dict:
        from dream3d.export.gaussian_export import export_gaussians
        from dream3d.stages.gaussian_texture import refine_texture

        g = cfg.gaussian if cfg is not None else None
        refine = None
        if g is not None and g.texture_refine_steps > 0:
            def refine(mesh, texture):
                return refine_texture(renderer, mesh, texture, g.texture_refine_steps, g.texture_refine_views,
                                      g.texture_refine_resolution)
        return export_gaussians(renderer, out_dir, formats=formats, resolution=resolution, texture_size=texture_size,
                                refine=refine)
