"""Classifier Score Distillation (CSD; Yu et al., "Text-to-3D with Classifier Score Distillation", ICLR 2024,
arXiv 2310.19415).

SDS's gradient splits as w(t)(ε_u − ε) + s·w(t)(ε_c − ε_u); CSD keeps only the second, "classifier" term:

    x = prior.encode_images(rgb),  t ~ schedule,  ε ~ N(0,I),  x_t = α_t x + σ_t ε
    g = s·w(t)·(ε_c(x_t; y) − ε_u(x_t))          (CSD; ε_u: the batch's negative prompt, "" = empty prompt)
    g ← g/‖g‖ per image when `normalize`       (the official code normalizes the gradient)

so SDS_s = w(t)(ε_u − ε) + s·CSD_1 with the same ε and t (tests/test_guidance_suite2.py checks it).
Official code read: CVMI-Lab/Classifier-Score-Distillation `threestudio/models/guidance/deep_floyd_simple_guidance.py`
and `configs/csd-if.yaml`: g = w·(c_cond ε_c + c_uncond ε_neg + c_null ε_∅ + c_noise ε) + 3·Perp-Neg, with
c_cond = 1, the null weight ramping −1 → 0 and the negative-prompt weight 0 → −1 over 5000 steps (the classifier
term first against the empty prompt, then against the negative prompt), uniform weighting, t_max 0.98 → 0.5 at
step 5000, and `grad_normalize` (g/‖g‖ over the batch; its batch is one image). Differences, and why:
- one unconditional branch, the batch's negative prompt, throughout (no ramp between ∅ and the negative
  prompt: with the default empty negative prompt the two coincide) and no Perp-Neg term (the `perpneg` method
  has it for SDS);
- the scale s multiplies the term (the official c_cond = 1; with `normalize` s has no effect).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class CSDSettings:
    """guidance.csd: whether each image's gradient is scaled to unit length (the official code does)."""

    normalize: bool = True


def unit_per_sample(g: torch.Tensor) -> torch.Tensor:
    """g (B,...) with each sample scaled to unit L2 norm (a zero sample stays zero)."""
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norm.view((-1,) + (1,) * (g.dim() - 1))


@register("csd", CSDSettings, "classifier score distillation: only the classifier term s·w(t)(eps_c - eps_u) "
          "(Yu et al., arXiv 2310.19415)")
class CSDGuidance(SDSGuidance):
    """CSD. Arguments as `SDSGuidance` (guidance_scale defaults to 1, weighting to "uniform") plus normalize."""

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = 1.0, weighting: str = "uniform",
                 normalize: bool = CSDSettings.normalize, **kwargs):
        super().__init__(prior, guidance_scale=guidance_scale, weighting=weighting, **kwargs)
        self.normalize = bool(normalize)

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = s·w(t)·(ε_c − ε_u) (B,C,h,w), unit length per image when normalizing, for x0 x (B,C,h,w),
        timesteps t (B,) and noise ε like x."""
        _, eps_c, eps_u = self.noisy_branches(x, t, noise, batch)
        w = self.weight_like(t, x)
        g = self.guidance_scale * w * (eps_c - eps_u)  # CSD: the classifier term
        return unit_per_sample(g) if self.normalize else g
