"""Wiring: the device and the guidance method that a `RunConfig` describes (renderers: `dream3d.stages`)."""

from __future__ import annotations

import logging

import torch

from dream3d.config import RunConfig
from dream3d.errors import ConfigError

log = logging.getLogger("dream3d")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def build_guidance(cfg: RunConfig, prior):
    """The guidance method named by `cfg.guidance.method`, with the shared schedule/weighting settings and the
    method's own `guidance.<method>_*` settings."""
    from dream3d.guidance.cfd import CFDGuidance
    from dream3d.guidance.dds import DDSGuidance
    from dream3d.guidance.nfsd import NFSDGuidance
    from dream3d.guidance.sds import SDSGuidance
    from dream3d.guidance.ssd import SSDGuidance
    from dream3d.guidance.vsd import VSDGuidance

    g = cfg.guidance
    common = dict(guidance_scale=g.guidance_scale, weighting=g.weighting, t_min=g.t_min, t_max=g.t_max,
                  t_schedule=g.t_schedule, t_max2=g.t_max_end, t_anneal_step=int(g.t_anneal_fraction * cfg.steps),
                  grad_clip=g.grad_clip or None, seed=cfg.seed)
    methods = {
        "sds": (SDSGuidance, {}),
        "vsd": (VSDGuidance, dict(lora_rank=g.vsd_lora_rank, lora_lr=g.vsd_lora_lr,
                                  camera_dropout=g.vsd_camera_dropout,
                                  lora_guidance_scale=g.vsd_lora_guidance_scale)),
        "nfsd": (NFSDGuidance, dict(threshold=g.nfsd_threshold)),
        "ssd": (SSDGuidance, dict(threshold=g.ssd_threshold, rescale=g.ssd_rescale)),
        "cfd": (CFDGuidance, dict(subsamples=g.cfd_subsamples, voxel_size=g.cfd_voxel_size or None,
                                  reinject=_schedule_spec(g.cfd_reinject))),
        "dds": (DDSGuidance, dict(source_prompt=g.source_prompt)),
    }
    if g.method not in methods:
        raise ConfigError(f"guidance method '{g.method}' is not available in this version; "
                          f"available: {', '.join(methods)}")
    cls, extra = methods[g.method]
    return cls(prior, **common, **extra)


def _schedule_spec(values: list[float]) -> float | list[float] | None:
    """A config list as a `scheduled_value` spec: [] -> None, [v] -> v, [s0, v0, v1, s1] as is."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    if len(values) == 4:
        return [float(v) for v in values]
    raise ConfigError("guidance.cfd_reinject must be [], [gamma] or [start_step, gamma_start, gamma_end, end_step];"
                      f" got {values}")
