"""Consistent Flow Distillation (Yan, Chen, Wang, ICLR 2025, arXiv 2501.05445).

SDS with two changes: the noise ε̃ is consistent across views (it lives on the object's surface,
`dream3d.guidance.surface_noise`), and t follows a deterministic decreasing schedule. With w = λ_t = σ_t/α_t:

    x_t = α_t(x + λ_t ε̃) = α_t x + σ_t ε̃
    g   = λ_t·(ε̂_s(x_t; y, t) − ε̃)                    (the CFD flow gradient, arXiv 2501.05445)

which is `SDSGuidance.grad` with noise ε̃ and weighting "lambda", so only the noise and the schedule differ here.

Why it is a flow (and the matched step size). In x̄ = x_t/α_t coordinates DDIM (η = 0) from t to t' < t reads
x̄_{t'} = x̄_t − (λ_t − λ_{t'})·ε̂(x_t). Gradient descent on a directly parameterized image x with the fixed ε̃,
x ← x − η·g, moves x̄_t = x + λ_t ε̃ to x̄' = x − ηλ_t(ε̂ − ε̃) + λ_{t'} ε̃; it equals DDIM's x̄_{t'} exactly when
ηλ_t = λ_t − λ_{t'}, i.e. η = 1 − λ_{t'}/λ_t (then the ε̃ terms also match: ηλ_t + λ_{t'} = λ_t). With the loss
trick ∂loss/∂x = g/B, so plain SGD needs lr = B·(1 − λ_{t'}/λ_t). tests/test_guidance_methods.py checks this.

Batch: depth, opacity (B,1,H,W) and cameras from the renderer (the trainer passes them); without them
(2D) one fixed noise image is used. Noise re-injection `reinject` is a `scheduled_value` spec of γ per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from dream3d.errors import ConfigError
from dream3d.guidance.base import GuidanceOut
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.loss import ClampSpec, scheduled_value
from dream3d.guidance.output import distillation_output
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.surface_noise import SurfaceNoise
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class CFDSettings:
    """guidance.cfd: the surface noise and its re-injection."""

    subsamples: int = 8  # sub-pixels per noise pixel and axis
    voxel_size: float = 0.0  # noise cell size in world units; 0 = automatic
    reinject: list[float] = field(default_factory=list)  # [] off, [gamma] or [start, gamma0, gamma1, end]


def reinject_spec(reinject: ClampSpec | Sequence[float]) -> ClampSpec:
    """`reinject` as a `scheduled_value` spec: None or [] -> None, a number or [γ] -> γ, [s0, γ0, γ1, s1] as
    floats; any other length is a ConfigError."""
    if reinject is None or isinstance(reinject, (int, float)):
        return None if reinject is None else float(reinject)
    values = [float(v) for v in reinject]
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if len(values) == 4:
        return values
    raise ConfigError("guidance.cfd.reinject must be [], [gamma] or [start_step, gamma_start, gamma_end, end_step];"
                      f" got {list(reinject)}")


@register("cfd", CFDSettings, "consistent flow distillation: noise on the object's surface, deterministic "
          "decreasing t (Yan et al., arXiv 2501.05445)")
class CFDGuidance(SDSGuidance):
    """CFD. Arguments as `SDSGuidance` with CFD defaults (weighting "lambda", t_schedule "linear" from t_max to
    t_min; a random schedule is a ConfigError) plus:

    subsamples: S sub-pixels per noise pixel and axis; voxel_size: noise cell size in world units (None/0: auto);
    reinject: γ of the per-step re-injection n ← √(1−γ)n + √γ N(0,1): None, a constant, or
        [start_step, γ_start, γ_end, end_step] (or the config's list form, see `reinject_spec`).
    """

    def __init__(self, prior: DiffusionPrior, weighting: str = "lambda", t_schedule: str = "linear", t_min: float = 0.2,
                 t_max: float = 0.98, subsamples: int = CFDSettings.subsamples, voxel_size: float | None = None,
                 reinject: ClampSpec | Sequence[float] = None, **kwargs):
        super().__init__(prior, weighting=weighting, t_schedule=t_schedule, t_min=t_min, t_max=t_max, **kwargs)
        if not self.schedule.deterministic:
            raise ConfigError(f"cfd needs a deterministic timestep schedule (linear or sqrt), got "
                              f"'{t_schedule}'; set guidance.t_schedule=linear")
        self.noise = SurfaceNoise(self.generator, subsamples=subsamples, voxel_size=voxel_size or None)
        self.reinject = reinject_spec(reinject)

    def forward(self, rgb: torch.Tensor, batch: GuidanceBatch, step: int) -> GuidanceOut:
        x = self.prior.encode_images(rgb)
        t = self.schedule(step, batch.total_steps, x.shape[0]).to(self.prior.alphas_cumprod.device)
        gamma = scheduled_value(self.reinject, step)
        if gamma:
            self.noise.reinject(gamma)  # n ← √(1−γ)n + √γ N(0,1)
        eps = self.noise(tuple(x.shape), batch.depth, batch.opacity, batch.cameras)
        g = self.grad(x, t, eps.to(x.device, x.dtype), batch)  # λ_t(ε̂_s(α_t(x + λ_t ε̃)) − ε̃)
        extra = {"reinject": gamma} if gamma else {}
        return distillation_output(self, x, g, t, step, extra)
