"""Entropic Score Distillation (ESD; Wang et al., "Taming Mode Collapse in Score Distillation for Text-to-3D
Generation", CVPR 2024, arXiv 2401.00909).

VSD maximizes the likelihood of every view under the prior; ESD adds the entropy of the rendered distribution,
which pushes the views of one object apart (against the Janus collapse onto the front view). Its gradient is VSD's
with φ's score taken by classifier-free guidance over φ's camera condition:

    g = w(t)·(ε̂_pre,s(x_t; y, t) − [λ·ε_φ(x_t; y, t, c) + (1 − λ)·ε_φ(x_t; y, t, ∅)])     (the ESD gradient)

λ = 1 is VSD; smaller λ weighs the camera-free score, whose distribution pools all views (its entropy term).
Everything else (φ, its training with the camera dropped at random so ε_φ(∅) is learnt, the state) is VSD's
(`dream3d.guidance.vsd`): ESD is `VSDGuidance` with λ = `lora_guidance_scale` = 0.5.
Official code read: VITA-Group/3D-Mode-Collapse `README.md`, which implements ESD as threestudio's
`prolificdreamer.yaml` with `system.guidance.guidance_scale_lora=0.5`, and threestudio
`threestudio/models/guidance/stable_diffusion_vsd_guidance.py` (ε̂_φ = ε_φ(∅) + λ(ε_φ(c) − ε_φ(∅)); the camera
dropped for the whole batch with probability 0.1, `lora_cfg_training`). Difference: dream3d drops the camera per
sample with probability `camera_dropout` (0.1), as its VSD does.
"""

from __future__ import annotations

from dataclasses import dataclass

from dream3d.guidance.registry import register
from dream3d.guidance.vsd import VSDGuidance, VSDSettings
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class ESDSettings(VSDSettings):
    """guidance.esd: VSD's settings with the entropy weight λ = lora_guidance_scale = 0.5 (the ESD README's)."""

    lora_guidance_scale: float = 0.5  # λ: CFG over φ's camera; 1 = VSD


@register("esd", ESDSettings, "entropic score distillation: VSD with classifier-free guidance over the LoRA's "
          "camera, against Janus (Wang et al., arXiv 2401.00909)")
class ESDGuidance(VSDGuidance):
    """ESD: `VSDGuidance` with lora_guidance_scale (λ) defaulting to 0.5."""

    def __init__(self, prior: DiffusionPrior, lora_rank: int = ESDSettings.lora_rank,
                 lora_lr: float = ESDSettings.lora_lr, camera_dropout: float = ESDSettings.camera_dropout,
                 lora_guidance_scale: float = ESDSettings.lora_guidance_scale, **kwargs):
        super().__init__(prior, lora_rank=lora_rank, lora_lr=lora_lr, camera_dropout=camera_dropout,
                         lora_guidance_scale=lora_guidance_scale, **kwargs)
