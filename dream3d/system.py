"""Wiring: the device and the guidance method that a `RunConfig` describes (renderers: `dream3d.stages`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from dream3d.config import RunConfig
from dream3d.errors import ConfigError
from dream3d.guidance import registry
from dream3d.guidance.base import Guidance
from dream3d.priors.protocol import DiffusionPrior

log = logging.getLogger("dream3d")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def device_timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs `fn` once and returns its wall time in seconds (CUDA synchronised around it)."""

    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return run


def device_name(dev: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU with torch's thread count."""
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def build_guidance(cfg: RunConfig, prior: DiffusionPrior) -> Guidance:
    """The guidance method named by `cfg.guidance.method` (`dream3d.guidance.registry`), with the shared
    schedule/weighting settings and the method's own section `guidance.<method>`."""
    g = cfg.guidance
    common = dict(guidance_scale=g.guidance_scale, weighting=g.weighting, t_min=g.t_min, t_max=g.t_max,
                  t_schedule=g.t_schedule, t_max_end=g.t_max_end, t_anneal_step=int(g.t_anneal_fraction * cfg.steps),
                  grad_clip=g.grad_clip or None, seed=cfg.seed)
    return registry.build(g.method, prior, common, getattr(g, g.method, None))
