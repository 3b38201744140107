"""The last stage every score-distillation method shares: clamp g, inject it with the loss trick, report floats.

Every method ends its `forward` with `distillation_output`, so the convention stays one.
"""

from __future__ import annotations

import torch

from dream3d.guidance.base import GuidanceOut
from dream3d.guidance.loss import grad_loss, prepare_grad, scheduled_value
from dream3d.guidance.weighting import weight


def distillation_output(guidance, x: torch.Tensor, g: torch.Tensor, t: torch.Tensor, step: int,
                        extra: dict[str, float] | None = None) -> GuidanceOut:
    """GuidanceOut for the raw gradient g (B,C,h,w) at x0 x (B,C,h,w) (differentiable) and timesteps t (B,).

    `guidance` supplies `grad_clip` (a `scheduled_value` spec), `weighting`, `guidance_scale` and `prior`.
    g is NaN-cleaned and clamped (`prepare_grad`), then `loss = 0.5·Σ(x − sg(x − g))²/B` (`grad_loss`), so
    ∂loss/∂x = g/B. info: loss, t, w, grad_norm, guidance_scale (+ grad_clip when clamping) + `extra`.
    """
    clip = scheduled_value(guidance.grad_clip, step)
    g = prepare_grad(g, clip)
    loss = grad_loss(x, g)
    info = {"loss": loss.item(), "t": t.float().mean().item(),
            "w": weight(guidance.weighting, guidance.prior.alphas_cumprod, t).mean().item(),
            "grad_norm": g.flatten(1).norm(dim=1).mean().item(), "guidance_scale": float(guidance.guidance_scale)}
    if clip is not None:
        info["grad_clip"] = clip
    info.update({k: float(v) for k, v in (extra or {}).items()})
    return GuidanceOut(loss, info)
