"""The loss trick that turns a score-distillation gradient g into a scalar loss, and gradient clamping.

Convention (all dream3d methods): `loss = 0.5·Σ(x − sg(x − g))² / B` with B = x.shape[0], hence

    ∂loss/∂x = g / B     and     loss = 0.5·Σ g² / B.

The gradient is injected by a custom autograd function, so it is *exactly* g/B: the textbook form computes
x − (x − g), which loses the low bits of a small g next to a large x (latents of magnitude ~4 in fp32 leave
~1e-6 absolute precision). Learning rates in dream3d configs assume this convention (threestudio's SDS uses the
same 0.5·Σ/B; CFD's reference MSE without 0.5 is 2×, DDS's linear surrogate ×2000 — scale LRs accordingly).
"""

from __future__ import annotations

from typing import Sequence

import torch

ClampSpec = float | Sequence[float] | None


def scheduled_value(spec: ClampSpec, step: int) -> float | None:
    """A constant, or [start_step, start_value, end_value, end_step] linearly interpolated over steps (held
    outside the interval); None stays None."""
    if spec is None:
        return None
    if isinstance(spec, (int, float)):
        return float(spec)
    s0, v0, v1, s1 = (float(v) for v in spec)
    if step <= s0 or s1 <= s0:
        return v0 if step <= s0 else v1
    return v0 + (v1 - v0) * min(1.0, (step - s0) / (s1 - s0))


def prepare_grad(g: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """g with NaN and ±inf replaced by 0, then clamped element-wise to ±clamp when clamp is given."""
    g = torch.nan_to_num(g.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    return g.clamp(-clamp, clamp) if clamp is not None else g


class _InjectGrad(torch.autograd.Function):
    """Scalar 0.5·Σg²/B whose gradient w.r.t. x is exactly g/B."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g)
        ctx.batch, ctx.dtype = x.shape[0], x.dtype
        return 0.5 * g.float().square().sum() / x.shape[0]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (g,) = ctx.saved_tensors
        return (grad_out * (g / ctx.batch)).to(ctx.dtype), None


def grad_loss(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The loss trick: scalar loss = 0.5·Σ(x − sg(x − g))²/B, with ∂loss/∂x = g/B exactly. x, g: (B,...)."""
    if g.shape != x.shape:
        raise ValueError(f"gradient shape {tuple(g.shape)} != input shape {tuple(x.shape)}")
    return _InjectGrad.apply(x, g.detach())
