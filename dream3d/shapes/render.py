"""Vectorized sphere-tracing renderer of shapes-world objects (torch; CPU or CUDA).

Shading is the one the NeRF uses for "lambertian": albedo * (AMBIENT + (1-AMBIENT) * max(0, n.l)) with the
headlight of `cameras.light_directions`, composited over a white background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dream3d.cameras import AMBIENT, Cameras, camera_rays, light_directions
from dream3d.shapes.primitives import COLORS, SHAPES, sdf


def _trace(shape: str, origins: torch.Tensor, dirs: torch.Tensor, steps: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere-trace rays (N,3): returns hit points (N,3) and a hit mask (N,)."""
    # start where the ray enters the bounding sphere of radius sqrt(3)
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - 3.0
    disc = b * b - c
    t = (-b - torch.sqrt(disc.clamp_min(0))).clamp_min(0)
    t_far = -b + torch.sqrt(disc.clamp_min(0))
    alive = disc > 0
    for _ in range(steps):
        d = sdf(shape, origins + t[:, None] * dirs)
        t = torch.where(alive, t + d.clamp_min(0) * 0.9 + 1e-4 * (d > 1e-3), t)
        alive = alive & (t < t_far)
    p = origins + t[:, None] * dirs
    hit = (disc > 0) & (sdf(shape, p).abs() < 2e-3) & (t < t_far)
    return p, hit


def _normals(shape: str, p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    offs = torch.eye(3, device=p.device, dtype=p.dtype) * eps
    n = torch.stack([sdf(shape, p + o) - sdf(shape, p - o) for o in offs], -1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def render_shapes(shapes: list[str], colors: list[str] | torch.Tensor, cams: Cameras, resolution: int = 32,
                  supersample: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one object per camera.

    shapes: B shape names; colors: B color names or a (B,3) albedo tensor; cams: B cameras.
    Returns rgb (B,3,H,W) in [0,1] over white, and mask (B,1,H,W) in [0,1] (antialiased coverage).
    """
    device = cams.c2w.device
    b = len(cams)
    if isinstance(colors, torch.Tensor):
        albedo = colors.to(device=device, dtype=torch.float32)
    else:
        albedo = torch.tensor([COLORS[c] for c in colors], device=device, dtype=torch.float32)
    r = resolution * supersample
    origins, dirs = camera_rays(cams, r, r)
    light = light_directions(cams).to(device)
    rgb = torch.ones(b, r, r, 3, device=device)
    mask = torch.zeros(b, r, r, device=device)
    for shape in set(shapes):
        idx = torch.tensor([i for i, s in enumerate(shapes) if s == shape], device=device)
        o, d = origins[idx].reshape(-1, 3), dirs[idx].reshape(-1, 3)
        p, hit = _trace(shape, o, d)
        n = _normals(shape, p)
        l_dir = light[idx][:, None, None, :].expand(-1, r, r, 3).reshape(-1, 3)
        a = albedo[idx][:, None, None, :].expand(-1, r, r, 3).reshape(-1, 3)
        shade = AMBIENT + (1 - AMBIENT) * (n * l_dir).sum(-1).clamp_min(0)
        col = torch.where(hit[:, None], a * shade[:, None], torch.ones_like(a))
        rgb[idx] = col.reshape(-1, r, r, 3)
        mask[idx] = hit.float().reshape(-1, r, r)
    rgb = rgb.permute(0, 3, 1, 2)
    mask = mask[:, None]
    if supersample > 1:
        rgb = F.avg_pool2d(rgb, supersample)
        mask = F.avg_pool2d(mask, supersample)
    return rgb.clamp(0, 1), mask
