"""Score Distillation Sampling (DreamFusion, Poole et al., ICLR 2023, arXiv 2209.14988).

    x = prior.encode_images(rgb),  t ~ schedule,  ε ~ N(0,I),  x_t = α_t x + σ_t ε
    g = w(t)·(ε̂_s(x_t; y, t) − ε),  ε̂_s = ε_u + s(ε_c − ε_u)   (one UNet call on a 2B batch)
    loss = 0.5·Σ(x − sg(x − g))²/B   (∂loss/∂x = g/B)

Per step the generator draws t first, then ε.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from dream3d.guidance.base import Guidance, GuidanceOut
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine, predict_branches
from dream3d.guidance.loss import ClampSpec
from dream3d.guidance.output import distillation_output
from dream3d.guidance.registry import register
from dream3d.guidance.timesteps import TimestepSchedule
from dream3d.guidance.weighting import check_weighting, weight
from dream3d.priors.kinds import distillation_scale
from dream3d.priors.protocol import DiffusionPrior


def default_guidance_scale(prior: DiffusionPrior) -> float:
    """The prior's `recommended_cfg` (dream3d_prior.json) if any, else 101 for latent and 21 for pixel priors
    (`dream3d.priors.kinds.distillation_scale`)."""
    return distillation_scale(getattr(prior, "kind", "latent"), getattr(prior, "recommended_cfg", None))


@dataclass
class SDSSettings:
    """SDS has no settings of its own: it is the shared ones (guidance_scale, weighting, t_*, grad_clip)."""


@register("sds", SDSSettings, "score distillation sampling (DreamFusion, arXiv 2209.14988)")
class SDSGuidance(Guidance):
    """SDS. Constructor args are plain values named as the config keys `guidance.*`.

    guidance_scale: CFG scale s in the diffusers form (None: `default_guidance_scale(prior)`).
    weighting: "sds" | "uniform" | "fantasia3d" | "lambda".
    t_min, t_max, t_schedule ("constant" | "step" | "sqrt" | "linear"), t_max_end, t_anneal_step, t_knots:
        see `dream3d.guidance.timesteps`.
    grad_clip: None, a constant c, or [start_step, start_c, end_c, end_step]: g is clamped element-wise to ±c.
    seed: seeds the generator for t and ε (None: random).
    """

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = None, weighting: str = "sds",
                 t_min: float = 0.02, t_max: float = 0.98, t_schedule: str = "constant", t_max_end: float = 0.5,
                 t_anneal_step: int = 5000, t_knots: Sequence[tuple[float, float]] | None = None,
                 grad_clip: ClampSpec = None, seed: int | None = 0):
        super().__init__(prior, seed)
        self.guidance_scale = default_guidance_scale(prior) if guidance_scale is None else float(guidance_scale)
        self.weighting = check_weighting(weighting)
        self.schedule = TimestepSchedule(t_schedule, t_min, t_max, t_max_end, t_anneal_step, t_knots,
                                         int(prior.num_train_timesteps))
        self.grad_clip = grad_clip

    def noisy_branches(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                       batch: GuidanceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_t = α_t x + σ_t ε (forward diffusion of the detached x) and the prior's (ε_c, ε_u) at x_t, from one
        batched UNet call; shapes like x (B,C,h,w)."""
        x_t = self.diffuse(x.detach(), t, noise)
        emb_c, emb_u = self.text_embeddings(batch, x.shape[0])
        eps_c, eps_u = predict_branches(self.prior, x_t, t, [emb_c, emb_u], batch.cameras)
        return x_t, eps_c, eps_u

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = w(t)·(ε̂_s(x_t) − ε) (B,C,h,w) for x0 x (B,C,h,w), timesteps t (B,) and noise ε like x."""
        x_t, eps_c, eps_u = self.noisy_branches(x, t, noise, batch)
        return self.weight_like(t, x) * (cfg_combine(eps_u, eps_c, self.guidance_scale) - noise)

    def weight_like(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """w(t) of this method's weighting for timesteps t (B,), shaped (B,1,...,1) to scale per-sample tensors like
        x (B,...), on x's device."""
        w = weight(self.weighting, self.prior.alphas_cumprod, t).to(x.device)
        return w.view((-1,) + (1,) * (x.dim() - 1))

    def forward(self, rgb: torch.Tensor, batch: GuidanceBatch, step: int) -> GuidanceOut:
        x = self.prior.encode_images(rgb)
        b = x.shape[0]
        t = self.schedule(step, batch.total_steps, b, self.generator).to(self.prior.alphas_cumprod.device)
        noise = self.randn_like(x)
        return distillation_output(self, x, self.grad(x, t, noise, batch), t, step)
