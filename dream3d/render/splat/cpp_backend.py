"""The C++/OpenMP tile compositor (extensions/splat/splat_cpu.cpp) as a differentiable torch function.

It computes exactly what `reference.composite_reference` computes (same rules, same tiles, same depth order), with
a hand-written backward; autograd carries its gradients w.r.t. means2d, conics, opacities and features on through
the shared projection.
"""

from __future__ import annotations

from types import ModuleType

import torch

from dream3d import native
from dream3d.render.splat.projection import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE_SIZE


def kernel() -> ModuleType | None:
    """The built CPU kernel, or None when it cannot be built (`native.load` logs why, once)."""
    return native.load("splat", "cpu")


def available() -> bool:
    """True when the C++ kernel is built and loaded."""
    return kernel() is not None


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, depths, rects, width, height):
        module = kernel()
        inputs = [t.detach().contiguous() for t in (means2d, conics, opacities, features)]
        image, alpha, final_t, last, offsets, ids = module.forward(
            *inputs, depths.detach().contiguous(), rects.contiguous(), width, height, TILE_SIZE,
            ALPHA_MIN, ALPHA_MAX, T_MIN)
        ctx.save_for_backward(*inputs, final_t, last, offsets, ids)
        ctx.size = (width, height)
        return image, alpha

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        means2d, conics, opacities, features, final_t, last, offsets, ids = ctx.saved_tensors
        g_m2d, g_con, g_opac, g_feat = kernel().backward(
            means2d, conics, opacities, features, offsets, ids, final_t, last, grad_image, grad_alpha[..., 0],
            *ctx.size, TILE_SIZE, ALPHA_MIN, ALPHA_MAX, T_MIN)
        return g_m2d, g_con, g_opac.sum(0), g_feat, None, None, None, None


def composite(means2d: torch.Tensor, conics: torch.Tensor, depths: torch.Tensor, opacities: torch.Tensor,
              features: torch.Tensor, rects: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same inputs and outputs as `reference.composite_reference`: features (C,H,W,K) and alpha (C,H,W,1)."""
    dtype = features.dtype
    return _Composite.apply(means2d.to(dtype), conics.to(dtype), opacities.to(dtype), features, depths.to(dtype),
                            rects, width, height)
