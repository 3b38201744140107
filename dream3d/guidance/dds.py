"""Delta Denoising Score (Hertz, Aberman, Cohen-Or, ICCV 2023, arXiv 2304.07090): text-driven editing.

With x the image being edited (initialized from the source), x̃ the fixed source image, and the *same* t and ε:

    x_t = α x + σ ε,   x̃_t = α x̃ + σ ε                                  (shared noise sample)
    g   = w(t)·(ε̂_s(x_t; y_tgt, t) − ε̂_s(x̃_t; y_src, t))     (DDS gradient: SDS(x; y_tgt) − SDS(x̃; y_src))

so the −ε of both SDS terms cancels, and g = 0 when image and prompt equal the source's. Defaults from the paper's
2D setting: w = 1 ("uniform"), t ∈ [0.05, 0.95]·T, s = 7.5. All four predictions (target/source × cond/uncond)
come from one UNet call with 4B samples.

Batch extras (the trainer adds them for `dream3d edit`):
- rgb_source: (B,3,H,W) in [0,1], the source scene rendered from the same cameras as `rgb` (no gradient);
- source_prompt: the prompt describing the source (falls back to the constructor's `source_prompt`).
The target prompt is batch.prompt; view suffixes (view_dependent) and the negative prompt apply to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.cameras import view_suffixes
from dream3d.errors import PromptError
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine, predict_branches, tile_cameras
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class DDSSettings:
    """guidance.dds: the prompt describing the source scene (`dream3d edit` sets it to the source run's)."""

    source_prompt: str = ""


@register("dds", DDSSettings, "delta denoising score, for editing a finished run with a new prompt "
          "(dream3d edit; Hertz et al., arXiv 2304.07090)", recipe="dds-edit.yaml", editing=True)
class DDSGuidance(SDSGuidance):
    """DDS. Arguments as `SDSGuidance` with DDS defaults (s = 7.5, uniform weighting, t in [0.05, 0.95]) plus
    source_prompt: used when the batch has no source_prompt."""

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = 7.5, weighting: str = "uniform",
                 t_min: float = 0.05, t_max: float = 0.95, t_schedule: str = "constant",
                 source_prompt: str = DDSSettings.source_prompt,
                 **kwargs):
        super().__init__(prior, guidance_scale=guidance_scale, weighting=weighting, t_min=t_min, t_max=t_max,
                         t_schedule=t_schedule, **kwargs)
        self.source_prompt = source_prompt

    def source_prompts(self, batch: GuidanceBatch, n: int) -> list[str]:
        """The source prompt, n times, with the same view suffixes as the target prompts."""
        src = batch.source_prompt or self.source_prompt
        if not isinstance(src, str) or not src.strip():
            raise PromptError("DDS editing needs a source prompt (batch.source_prompt or guidance.dds.source_prompt)")
        if batch.view_dependent:
            return [src + s for s in view_suffixes(batch.cameras)]
        return [src] * n

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = w(t)·(ε̂_s(x_t; y_tgt) − ε̂_s(x̃_t; y_src)) (B,C,h,w) for x0 x (B,C,h,w), t (B,), noise ε like x."""
        if batch.rgb_source is None:
            raise ValueError("DDS needs batch.rgb_source (the source render, (B,3,H,W) in [0,1])")
        x = x.detach()
        b = x.shape[0]
        with torch.no_grad():
            x_src = self.prior.encode_images(batch.rgb_source).to(x)
        if x_src.shape != x.shape:
            raise ValueError(f"source {tuple(x_src.shape)} and edited {tuple(x.shape)} images differ in shape")
        # same t and ε for both images: x_t = α x + σ ε and x̃_t = α x̃ + σ ε
        x_both = self.diffuse(torch.cat([x, x_src]), t.repeat(2), torch.cat([noise, noise]))
        tgt, neg = self.prompts(batch, b)
        enc = self.prior.encode_text
        cond = torch.cat([enc(tgt), enc(self.source_prompts(batch, b))])  # rows: target images, then source images
        eps_c, eps_u = predict_branches(self.prior, x_both, t.repeat(2), [cond, enc(neg + neg)],
                                        tile_cameras(batch.cameras, 2))
        eps_tgt, eps_src = cfg_combine(eps_u, eps_c, self.guidance_scale).split(b)  # ε̂_s per image, diffusers CFG
        w = self.weight_like(t, x)
        return w * (eps_tgt - eps_src)  # DDS gradient
