"""Interval Score Matching (ISM; Liang et al., LucidDreamer, CVPR 2024, arXiv 2311.11284).

SDS compares the prediction at x_t with the random ε that made x_t; ISM compares it with the unconditional
prediction one interval earlier on the DDIM (η = 0) trajectory of the render:

    x = prior.encode_images(rgb),  t from the schedule,  s = max(t − δ_T, 0)
    x_s = DDIM inversion of x to s with the unconditional ε_∅ (`dream3d.guidance.ddim`, a step every δ_S)
    x_t = one DDIM step from x_s to t with ε_∅(x_s, s)
    g   = w(t)·(ε̂_s(x_t; y, t) − ε_∅(x_s; s))          (the ISM gradient; w = "lambda", σ_t/α_t)

ε_∅ is the prior with the empty prompt (LucidDreamer's `inverse_text` ""); the CFG's unconditional branch ε_u at t
is the batch's negative prompt, as LucidDreamer's `negative` (the two coincide for an empty negative prompt).
Official code read: LucidDreamer
`guidance/sd_utils.py` (`train_step`, `add_noise_with_cfg`), `guidance/sd_step.py`, `arguments/__init__.py` and
`configs/hamburger.yaml`. Its defaults: s = 7.5 (diffusers form), w(t) = √((1 − ᾱ_t)/ᾱ_t), δ_T = 50 (annealed
from 100 over the warm-up), inversion stride δ_S = 200 with at most 5 steps, unconditional inversion
(`denoise_guidance_scale` 1), η = 0, t ~ U[0.02, t_max]·T with t_max falling 0.98 → 0.5 over the first 1500 of
5000 steps. Differences, and why:
- δ_T is the constant `delta_t` (its final value 50 of 1000 as a fraction, so priors with T ≠ 1000 match);
  t_max falls in one step ("step" schedule) rather than linearly: dream3d's schedules.
- the inversion starts from the clean render (ᾱ = 1) asked at timestep 0; LucidDreamer first adds random noise
  at timestep 0 (σ_0 ≈ 0.03 for Stable Diffusion) and inverts from there. Starting clean keeps ISM deterministic
  given t, so the inversion-recovers-x0 identity holds without that noise.
- LucidDreamer adds 0.1·N(0,1) per channel to that noise; here no noise enters (per step the generator draws
  t, then SDS's ε, which ISM does not use).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.errors import ConfigError
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine, predict_branches
from dream3d.guidance.ddim import abar_at, ddim_step, ddim_walk, inversion_path
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.timesteps import to_index
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class ISMSettings:
    """guidance.ism: the interval δ_T between s and t, and the inversion stride δ_S, as fractions of T."""

    delta_t: float = 0.05  # δ_T: s = t − δ_T (LucidDreamer: 50 of 1000)
    xs_delta_t: float = 0.2  # δ_S: a DDIM inversion step every δ_S below s (LucidDreamer: 200 of 1000)


@register("ism", ISMSettings, "interval score matching: compare with the unconditional prediction one DDIM "
          "interval earlier on the render's inversion (LucidDreamer, arXiv 2311.11284)")
class ISMGuidance(SDSGuidance):
    """ISM. Arguments as `SDSGuidance` (guidance_scale defaults to 7.5, weighting to "lambda") plus the
    `ISMSettings` fields."""

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = 7.5, weighting: str = "lambda",
                 delta_t: float = ISMSettings.delta_t, xs_delta_t: float = ISMSettings.xs_delta_t, **kwargs):
        super().__init__(prior, guidance_scale=guidance_scale, weighting=weighting, **kwargs)
        if not (0.0 <= delta_t <= 1.0 and 0.0 < xs_delta_t <= 1.0):
            raise ConfigError(f"guidance.ism needs 0 <= delta_t <= 1 and 0 < xs_delta_t <= 1; got {delta_t}, "
                              f"{xs_delta_t}")
        T = int(prior.num_train_timesteps)
        self.delta = to_index(delta_t, T)
        self.stride = max(to_index(xs_delta_t, T), 1)

    def interval(self, x: torch.Tensor, t: torch.Tensor, batch: GuidanceBatch
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_s, ε_∅(x_s, s), x_t), each like x (B,C,h,w), s (B,) = t − δ_T clamped at 0: the render's DDIM
        inversion to s with the empty prompt and one more DDIM step to t."""
        s = (t - self.delta).clamp(min=0)
        self.prompts(batch, x.shape[0])  # validates the prompt
        emb_u = self.prior.encode_text([""] * x.shape[0])
        eps_u = lambda x_a, t_a: self.prior.eps(x_a, t_a, emb_u, batch.cameras)  # noqa: E731
        acp = self.prior.alphas_cumprod
        x_s = ddim_walk(eps_u, x.detach(), inversion_path(s, self.stride), acp)
        with torch.no_grad():
            eps_s = eps_u(x_s, s)
        return x_s, eps_s, ddim_step(x_s, eps_s, abar_at(acp, s), abar_at(acp, t))

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = w(t)·(ε̂_s(x_t) − ε_∅(x_s)) (B,C,h,w) for x0 x (B,C,h,w) and timesteps t (B,); `noise` is not used
        (the inversion replaces it)."""
        _, eps_s, x_t = self.interval(x, t, batch)
        emb_c, emb_u = self.text_embeddings(batch, x.shape[0])
        eps_c, eps_u = predict_branches(self.prior, x_t, t, [emb_c, emb_u], batch.cameras)
        w = self.weight_like(t, x)
        return w * (cfg_combine(eps_u, eps_c, self.guidance_scale) - eps_s)  # ISM gradient
