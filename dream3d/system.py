"""Wiring: build the geometry, renderer, prior and guidance that a `RunConfig` describes."""

from __future__ import annotations

import logging

import torch

from dream3d.config import RunConfig
from dream3d.errors import ConfigError
from dream3d.guidance import registry
from dream3d.guidance.base import Guidance

log = logging.getLogger("dream3d")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def build_renderer(cfg: RunConfig):
    """The stage's geometry + background inside its renderer (on the CPU; move it with `.to(device)`): a NeRF in
    a VolumeRenderer, or (`stage: mesh`) a DMTet geometry in a MeshRenderer."""
    from dream3d.geometry.background import MLPBackground, SolidBackground
    from dream3d.geometry.implicit_volume import ImplicitVolume
    from dream3d.render.volume import VolumeRenderer

    g = cfg.geometry
    if cfg.stage == "mesh":
        return _build_mesh_renderer(cfg, SolidBackground() if cfg.render.background == "white" else MLPBackground())
    geometry = ImplicitVolume(bound=g.bound, n_levels=g.n_levels, n_features_per_level=g.n_features_per_level,
                              log2_hashmap_size=g.log2_hashmap_size, base_resolution=g.base_resolution,
                              per_level_scale=g.per_level_scale, mlp_width=g.mlp_width,
                              blob_density=g.blob_density, blob_radius=g.blob_radius, normal_type=g.normal_type,
                              encoding_backend=g.encoding_backend)
    background = SolidBackground() if cfg.render.background == "white" else MLPBackground()
    r = cfg.render
    return VolumeRenderer(geometry, background, num_samples_per_ray=r.samples_per_ray,
                          grid_resolution=r.occupancy_resolution, occ_update_every=r.occupancy_update_every,
                          backend=r.backend)


def _build_mesh_renderer(cfg: RunConfig, background):
    from dream3d.geometry.dmtet import DMTetGeometry
    from dream3d.render.mesh import MeshRenderer

    g, m = cfg.geometry, cfg.mesh
    geometry = DMTetGeometry(resolution=m.tet_resolution, bound=g.bound, deform_fraction=m.deform_fraction,
                             n_levels=g.n_levels, n_features_per_level=g.n_features_per_level,
                             log2_hashmap_size=g.log2_hashmap_size, base_resolution=g.base_resolution,
                             per_level_scale=g.per_level_scale, mlp_width=g.mlp_width,
                             encoding_backend=g.encoding_backend)
    return MeshRenderer(geometry, background, backend=m.backend, sdf_regularizer=m.sdf_regularizer,
                        normal_consistency=m.normal_consistency, sdf_anchor=m.sdf_anchor)


def build_guidance(cfg: RunConfig, prior) -> Guidance:
    """The guidance method named by `cfg.guidance.method` (`dream3d.guidance.registry`), with the shared
    schedule/weighting settings and the method's own section `guidance.<method>`."""
    g = cfg.guidance
    common = dict(guidance_scale=g.guidance_scale, weighting=g.weighting, t_min=g.t_min, t_max=g.t_max,
                  t_schedule=g.t_schedule, t_max_end=g.t_max_end, t_anneal_step=int(g.t_anneal_fraction * cfg.steps),
                  grad_clip=g.grad_clip or None, seed=cfg.seed)
    return registry.build(g.method, prior, common, getattr(g, g.method, None))
