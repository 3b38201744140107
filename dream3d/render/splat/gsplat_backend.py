"""gsplat's CUDA rasterizer (`gsplat.rasterization`, the `[cuda]` extra) behind the splatting interface.

gsplat takes the same conventions (OpenCV world-to-camera, intrinsics in pixels, (w,x,y,z) quaternions, linear
scales, opacities in [0,1]); `render_mode="RGB+D"` gives sum_i T_i alpha_i z_i as its last channel. Its opacity
clamp is 0.999 where ours is 0.99, so images agree wherever no splat reaches that opacity at a pixel.
"""

from __future__ import annotations

import importlib.util

import torch


def unavailable(device: torch.device) -> str | None:
    """None when gsplat can rasterize tensors on `device`, else why not."""
    if device.type != "cuda":
        return f"it needs CUDA tensors (these are on {device.type})"
    if importlib.util.find_spec("gsplat") is None:
        return "gsplat is not installed (pip install 'dream3d[cuda]')"
    return None


def rasterize(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
              colors: torch.Tensor, viewmats: torch.Tensor, ks: torch.Tensor, width: int, height: int,
              near_plane: float, eps2d: float) -> tuple[torch.Tensor, ...]:
    """(rgb (C,H,W,D), alpha (C,H,W,1), depth (C,H,W,1), means2d (C,N,2), radii (C,N) int32), as SplatOut."""
    from gsplat import rasterization

    image, alpha, meta = rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height,
                                       near_plane=near_plane, eps2d=eps2d, packed=False, render_mode="RGB+D",
                                       rasterize_mode="classic")
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5: a radius per image axis
        radii = radii.amax(-1)
    dim = colors.shape[-1]
    return image[..., :dim], alpha, image[..., dim:], means2d, radii.to(torch.int32)
