"""Score Distillation via Inversion (SDI; Lukoianov et al., "Score Distillation via Reparametrized DDIM",
NeurIPS 2024, arXiv 2405.15891).

SDS noises the render with random ε; SDI takes the noise that DDIM inversion of the render finds instead:

    x = prior.encode_images(rgb),  t from the schedule (decreasing: "linear", 0.98 → 0.25 by default)
    x_t = DDIM inversion of x from the clean image to t (`dream3d.guidance.ddim`), its ε-predictions
          ε̂_inv = ε_u + s_inv(ε_c − ε_u) on the grid 0, T/n, 2T/n, ... below t, then t
    κ   = (x_t − α_t x)/σ_t                     (the noise the inversion found: x_t = α_t x + σ_t κ)
    g   = w(t)·(ε̂_s(x_t; y, t) − κ)            (the SDI gradient: SDS's ε replaced by κ)

Official code read: threestudio `threestudio/models/guidance/stable_diffusion_sdi_guidance.py` and
`configs/sdi.yaml` (commit 28d9d80). Its defaults: guidance scale 7.5 at t, inversion scale −7.5 (the inversion
is guided *away* from the prompt), n = 10 inversion steps over [0, T), η = 0.3 (`inversion_eta`: eta·√v·ξ added
after each inversion step), t annealed linearly from 0.98 to 0.25 over the run (`t_anneal`, the "linear"
schedule here). Both scales are in the diffusers form ε_u + s(ε_c − ε_u) because sdi.yaml turns Perp-Neg on,
whose combination threestudio writes in that form (without Perp-Neg it uses ε_c + s(ε_c − ε_u), s + 1 here).
Differences, and why:
- threestudio lands its last inversion step at t + δ, δ ~ U[0, T/n), and then asks the UNet at t with the
  noise level of t + δ; here the last step lands at t, so x_t, κ and the timestep the UNet is told agree (δ only
  jittered t off the inversion grid, which the continuous schedule here never is on).
- its loss 0.5·mean((x − x̂0)²)/B with x̂0 = (x_t − σ_t ε̂)/α_t has the gradient (σ_t/α_t)(ε̂ − κ)/(C·h·w): the
  "lambda" weighting (the default here and in the recipes) without the constant 1/(C·h·w), which dream3d's loss
  convention leaves to the learning rate (Adam ignores it).
- no Perp-Neg (dream3d has it as the `perpneg` method, on SDS).
- the first inversion step starts from the clean render (ᾱ = 1) asked at timestep 0 (threestudio: timestep
  1 − T/n with ᾱ_0).
Per step the generator draws t (random schedules only), then SDS's ε (unused: κ replaces it), then the η noise of
each inversion step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.errors import ConfigError
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine, predict_branches
from dream3d.guidance.ddim import abar_at, ddim_walk, inversion_path, noise_of
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class SDISettings:
    """guidance.sdi: the DDIM inversion that finds the noise (threestudio's SDI defaults, CFG in diffusers form)."""

    inversion_steps: int = 10  # DDIM steps over the whole [0, T) range; a step every T/n below t
    inversion_guidance_scale: float = -7.5  # CFG of the inversion's ε (diffusers form)
    inversion_eta: float = 0.3  # noise added after each inversion step, as a fraction of the DDPM std


def guided_eps(prior: DiffusionPrior, emb_c: torch.Tensor, emb_u: torch.Tensor, scale: float, cameras=None):
    """An `EpsFn` (x_t, t) -> ε_u + s(ε_c − ε_u) (one batched call; a single branch when s is 1 or 0)."""
    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 1.0:
            return prior.eps(x_t, t, emb_c, cameras)
        if scale == 0.0:
            return prior.eps(x_t, t, emb_u, cameras)
        eps_c, eps_u = predict_branches(prior, x_t, t, [emb_c, emb_u], cameras)
        return cfg_combine(eps_u, eps_c, scale)
    return eps


@register("sdi", SDISettings, "score distillation via inversion: the noise comes from DDIM inversion of the "
          "render (Lukoianov et al., arXiv 2405.15891)")
class SDIGuidance(SDSGuidance):
    """SDI. Arguments as `SDSGuidance` (guidance_scale defaults to 7.5, weighting to "lambda", t_schedule to
    "linear" 0.98 → 0.25) plus the `SDISettings` fields."""

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = 7.5, weighting: str = "lambda",
                 t_min: float = 0.25, t_schedule: str = "linear", inversion_steps: int = SDISettings.inversion_steps,
                 inversion_guidance_scale: float = SDISettings.inversion_guidance_scale,
                 inversion_eta: float = SDISettings.inversion_eta, **kwargs):
        super().__init__(prior, guidance_scale=guidance_scale, weighting=weighting, t_min=t_min, t_schedule=t_schedule,
                         **kwargs)
        if inversion_steps < 1:
            raise ConfigError(f"guidance.sdi.inversion_steps must be >= 1; got {inversion_steps}")
        if inversion_eta < 0:
            raise ConfigError(f"guidance.sdi.inversion_eta must be >= 0; got {inversion_eta}")
        self.stride = max(int(prior.num_train_timesteps) // int(inversion_steps), 1)
        self.inversion_guidance_scale = float(inversion_guidance_scale)
        self.inversion_eta = float(inversion_eta)

    def invert(self, x: torch.Tensor, t: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """x_t (B,C,h,w): DDIM inversion of the detached x0 x (B,C,h,w) to timesteps t (B,)."""
        emb_c, emb_u = self.text_embeddings(batch, x.shape[0])
        eps = guided_eps(self.prior, emb_c, emb_u, self.inversion_guidance_scale, batch.cameras)
        return ddim_walk(eps, x.detach(), inversion_path(t, self.stride), self.prior.alphas_cumprod,
                         self.inversion_eta, self.randn_like)

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = w(t)·(ε̂_s(x_t) − κ) (B,C,h,w) for x0 x (B,C,h,w) and timesteps t (B,); `noise` is not used (κ, the
        inverted noise, replaces it)."""
        x = x.detach()
        x_t = self.invert(x, t, batch)
        kappa = noise_of(x_t, x, abar_at(self.prior.alphas_cumprod, t))
        emb_c, emb_u = self.text_embeddings(batch, x.shape[0])
        eps_c, eps_u = predict_branches(self.prior, x_t, t, [emb_c, emb_u], batch.cameras)
        w = self.weight_like(t, x)
        return w * (cfg_combine(eps_u, eps_c, self.guidance_scale) - kappa)  # SDI gradient
