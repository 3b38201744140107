"""`rasterize_gaussians`: images of 3D Gaussians through one of the backends, all with the same inputs and outputs.

Backends: `torch` (the dense reference, `reference.py`), `cpp` (our C++/OpenMP tile kernel, `cpp_backend.py`),
`gsplat` (gsplat's CUDA `rasterization`, `gsplat_backend.py`). `auto` takes gsplat for CUDA tensors when it is
installed, else the C++ kernel for CPU tensors when it builds, else the torch reference. The torch and C++ backends
share the projection (`projection.py`), so they differ only in how they composite.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dream3d.errors import Dream3DError
from dream3d.render.splat import cpp_backend, gsplat_backend
from dream3d.render.splat.projection import project_gaussians, tile_rects
from dream3d.render.splat.reference import composite_reference

logger = logging.getLogger("dream3d")

BACKENDS: tuple[str, ...] = ("auto", "cpp", "gsplat", "torch")


@dataclass
class SplatOut:
    """Images of C cameras at H x W, not composited over a background.

    rgb: (C,H,W,D) sum_i T_i alpha_i c_i. alpha: (C,H,W,1) 1 - prod_i (1 - alpha_i).
    depth: (C,H,W,1) sum_i T_i alpha_i z_i, camera-space z in world units.
    means2d: (C,N,2) projected centres in pixels; its .grad is filled by backward (the densification statistic).
    radii: (C,N) int32 pixel radius of each splat, 0 where culled.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    means2d: torch.Tensor
    radii: torch.Tensor


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that `backend` means for tensors on `device`: one of cpp, gsplat, torch.

    `cpp` whose kernel does not build falls back to torch (the loader logs why, once); an explicit `gsplat` that
    cannot run is a one-line Dream3DError.
    """
    if backend not in BACKENDS:
        raise Dream3DError(f"unknown splatting backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "gsplat":
        why = gsplat_backend.unavailable(device)
        if why:
            raise Dream3DError(f"splatting backend 'gsplat' is not available: {why}")
        return "gsplat"
    if backend == "auto" and gsplat_backend.unavailable(device) is None:
        return "gsplat"
    if backend in ("auto", "cpp") and device.type == "cpu" and cpp_backend.available():
        return "cpp"
    return "torch"


def rasterize_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                        colors: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                        near_plane: float = 0.01, eps2d: float = 0.3, backend: str = "auto") -> SplatOut:
    """Render N Gaussians into C cameras.

    means: (N,3) world positions; quats: (N,4) rotations (w,x,y,z), normalised here; scales: (N,3) standard
    deviations along the local axes (> 0); opacities: (N,) in [0,1]; colors: (N,D) features (RGB in [0,1] for
    D=3); viewmats: (C,4,4) OpenCV world-to-camera; Ks: (C,3,3) intrinsics in pixels (see `cameras_to_splat`).
    `near_plane` culls centres at camera z <= it (world units); `eps2d` (pixels^2) is the low-pass dilation.
    Differentiable w.r.t. means, quats, scales, opacities and colors.
    """
    name = resolve_backend(backend, means.device)
    if name == "gsplat":
        rgb, alpha, depth, means2d, radii = gsplat_backend.rasterize(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, eps2d)
        return SplatOut(rgb, alpha, depth, means2d, radii)
    splats = project_gaussians(means, quats, scales, viewmats, Ks, width, height, near_plane, eps2d)
    if splats.means2d.requires_grad:
        splats.means2d.retain_grad()
    rects = tile_rects(splats.means2d, splats.radii, width, height)
    n_cams, dim = viewmats.shape[0], colors.shape[-1]
    features = torch.cat([colors[None].expand(n_cams, -1, -1), splats.depths[..., None]], -1)  # (C,N,D+1)
    composite = cpp_backend.composite if name == "cpp" else composite_reference
    image, alpha = composite(splats.means2d, splats.conics, splats.depths, opacities, features, rects, width, height)
    return SplatOut(image[..., :dim], alpha, image[..., dim:], splats.means2d, splats.radii)
