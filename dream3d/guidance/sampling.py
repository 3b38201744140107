"""Ancestral-free image sampling from a prior (DDIM, eta = 0) with classifier-free guidance.

Used by `dream3d prior sample|eval` and previews; shares CFG and the batched branch call with the guidance
methods, so a prior is exercised exactly as score distillation uses it.
"""

from __future__ import annotations

import torch

from dream3d.cameras import Cameras
from dream3d.guidance.cfg import cfg_combine, predict_branches
from dream3d.priors.protocol import DiffusionPrior


@torch.no_grad()
def sample_images(prior: DiffusionPrior, prompts: list[str], cameras: Cameras | None = None, steps: int = 50,
                  guidance_scale: float = 3.0, seed: int = 0, negative_prompt: str = "",
                  chunk: int = 64, progress=None) -> torch.Tensor:
    """Sample one image per prompt; returns rgb (B,3,H,W) in [0,1] (decoded for latent priors).

    cameras: one per prompt for camera-aware priors (None = camera dropped); both CFG branches see it.
    """
    from diffusers import DDIMScheduler

    # prior.eps always returns ε, whatever the model predicts; no clipping/thresholding of x0
    sched = DDIMScheduler.from_config(prior.scheduler.config, prediction_type="epsilon", clip_sample=False,
                                      thresholding=False)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    shape = prior.sample_shape()
    out = []
    for i in range(0, len(prompts), chunk):
        p = prompts[i:i + chunk]
        cams = cameras[i:i + chunk] if cameras is not None else None
        cond = prior.encode_text(p)
        uncond = prior.encode_text([negative_prompt] * len(p))
        x = torch.randn(len(p), *shape, generator=gen).to(prior.device)
        for t in sched.timesteps:
            tt = torch.full((len(p),), int(t), device=prior.device, dtype=torch.long)
            eps_c, eps_u = predict_branches(prior, x, tt, [cond, uncond], cams)
            x = sched.step(cfg_combine(eps_u, eps_c, guidance_scale), t, x).prev_sample
            if progress is not None:
                progress(1)
        out.append(prior.decode(x).cpu())
    return torch.cat(out)
