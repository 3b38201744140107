"""Asynchronous Score Distillation (ASD; Ma et al., ScaleDreamer, ECCV 2024, arXiv 2407.13584).

VSD's LoRA estimates the render's own score; ASD replaces it with the frozen prior itself at a later timestep t',
noised with the same ε (no LoRA, no extra training):

    x = prior.encode_images(rgb),  t ~ schedule,  ε ~ N(0,I)
    t' = min(t + ⌊r·(t − t_lo)·u⌋, T − 1),  u ~ U[0,1) (u = 1 when not `plus_random`), t_lo = round(t_min·T)
    x_t = α_t x + σ_t ε,   x_t' = α_t' x + σ_t' ε
    g = w(t)·(ε̂_s(x_t; y, t) − ε_c(x_t'; y, t'))    (ASD; ε_c without CFG, the same prompt y)

All three predictions (ε_c, ε_u at t; ε_c at t') come from one UNet call with 3B samples. With t' = t the
gradient is w(t)(ε̂_s − ε_c) = (s − 1)·w(t)(ε_c − ε_u) = (s − 1)·CSD_1 (tests/test_guidance_suite2.py).
Official code read: theEricMa/ScaleDreamer `threestudio/models/guidance/stable_diffusion_asd_guidance.py`
(`get_t_plus`, `get_eps`) and `configs/single-prompt_benchmark/asd_sd_nerf.yaml`: s = 7.5 (diffusers form),
plus_ratio 0.1, plus_random true, "sds" weighting, t range shrinking linearly from [0.5, 0.98] to [0.02, 0.5]
over 25000 steps, Perp-Neg at 0.5. Differences, and why: the t range follows dream3d's schedules (the "step"
schedule's 0.98 → 0.5), t' ≥ 1 is not enforced separately (t' ≥ t ≥ t_lo already), and no Perp-Neg term (the
`perpneg` method has it for SDS).
Per step the generator draws t, then ε, then u (when `plus_random`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.errors import ConfigError
from dream3d.guidance.base import GuidanceOut
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine, tile_cameras
from dream3d.guidance.output import distillation_output
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.timesteps import to_index
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class ASDSettings:
    """guidance.asd: how much later t' is than t (ScaleDreamer's defaults)."""

    plus_ratio: float = 0.1  # r: t' − t is at most r·(t − t_lo)
    plus_random: bool = True  # draw u ~ U[0,1) per sample (else u = 1)


@register("asd", ASDSettings, "asynchronous score distillation: the prior at a later timestep t' with the same "
          "noise replaces SDS's noise (ScaleDreamer, arXiv 2407.13584)")
class ASDGuidance(SDSGuidance):
    """ASD. Arguments as `SDSGuidance` (guidance_scale defaults to 7.5) plus the `ASDSettings` fields."""

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = 7.5,
                 plus_ratio: float = ASDSettings.plus_ratio, plus_random: bool = ASDSettings.plus_random, **kwargs):
        super().__init__(prior, guidance_scale=guidance_scale, **kwargs)
        if plus_ratio < 0:
            raise ConfigError(f"guidance.asd.plus_ratio must be >= 0; got {plus_ratio}")
        self.plus_ratio = float(plus_ratio)
        self.plus_random = bool(plus_random)

    def later_timesteps(self, t: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """t' (B,) int64 for timesteps t (B,): t + ⌊r·(t − t_lo)·u⌋ clamped to T − 1; u (B,) in [0,1) or None (1)."""
        T = int(self.prior.num_train_timesteps)
        shift = self.plus_ratio * (t - to_index(self.schedule.t_min, T)).clamp(min=0).double()
        if u is not None:
            shift = shift * u.to(shift)
        return (t + shift.floor().long().to(t.device)).clamp(max=T - 1)

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch,
             t_plus: torch.Tensor | None = None) -> torch.Tensor:
        """g = w(t)·(ε̂_s(x_t) − ε_c(x_t')) (B,C,h,w) for x0 x (B,C,h,w), timesteps t (B,), noise ε like x and the
        later timesteps t' (B,) (None: `later_timesteps(t)` with u = 1)."""
        x = x.detach()
        b = x.shape[0]
        t_plus = self.later_timesteps(t) if t_plus is None else t_plus.to(t.device)
        x_both = self.diffuse(torch.cat([x, x]), torch.cat([t, t_plus]), torch.cat([noise, noise]))
        x_t, x_tp = x_both.split(b)
        emb_c, emb_u = self.text_embeddings(batch, b)
        eps = self.prior.eps(torch.cat([x_t, x_t, x_tp]), torch.cat([t, t, t_plus]),
                             torch.cat([emb_c, emb_u, emb_c]), tile_cameras(batch.cameras, 3))
        eps_c, eps_u, eps_later = eps.split(b)
        w = self.weight_like(t, x)
        return w * (cfg_combine(eps_u, eps_c, self.guidance_scale) - eps_later)  # ASD gradient

    def forward(self, rgb: torch.Tensor, batch: GuidanceBatch, step: int) -> GuidanceOut:
        x = self.prior.encode_images(rgb)
        b = x.shape[0]
        t = self.schedule(step, batch.total_steps, b, self.generator).to(self.prior.alphas_cumprod.device)
        noise = self.randn_like(x)
        u = torch.rand(b, generator=self.generator, dtype=torch.float64) if self.plus_random else None
        t_plus = self.later_timesteps(t, u)
        return distillation_output(self, x, self.grad(x, t, noise, batch, t_plus), t, step,
                                   {"t_plus": t_plus.float().mean().item()})
