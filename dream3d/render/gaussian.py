"""Gaussian renderer: a `GaussianCloud` splatted (`dream3d.render.splat.rasterize_gaussians`) over a background.

The rasterizer composites per-Gaussian features front to back: A = Σ T_i α_i c_i (premultiplied colour),
a = 1 − Π(1 − α_i) (opacity), Z = Σ T_i α_i z_i (camera-space depth) and, when the shading needs them,
N = Σ T_i α_i n_i with n_i each Gaussian's shortest axis (`GaussianCloud.normals`, turned outward). Shading is
deferred to the pixels with the models of `dream3d.render.shading` (n = N/|N|, L = AMBIENT + (1 − AMBIENT)·max(0,
n·l)):

    albedo:      rgb = A + (1 − a)·bg
    lambertian:  rgb = A·L + (1 − a)·bg
    textureless: rgb = a·L + (1 − a)·bg

Outputs as `VolumeRenderer`: rgb (B,3,H,W), opacity (B,1,H,W) = a, depth (B,1,H,W) = Σ w·t with t the distance
along the pixel's ray (z divided by the cosine to the optical axis), normal (B,3,H,W) = N (world space).

Training contract: a training-mode render with gradients keeps the projected centres it made; after the backward pass
`take_statistics()` hands their gradients and screen radii to the cloud's densification statistics.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dream3d.cameras import AMBIENT, Cameras, camera_rays, light_directions
from dream3d.geometry.background import SolidBackground
from dream3d.geometry.gaussians import GaussianCloud
from dream3d.render.output import RenderOut
from dream3d.render.shading import check_shading, needs_normals


class GaussianRenderer(nn.Module):
    """Renders a `GaussianCloud` over a background. backend: the rasterizer's ("auto" | "cpp" | "gsplat" |
    "torch"); eps2d: low-pass dilation (pixels²); near_plane: culling distance (world units)."""

    def __init__(self, geometry: GaussianCloud, background: nn.Module | None = None, backend: str = "auto",
                 eps2d: float = 0.3, near_plane: float = 0.01) -> None:
        super().__init__()
        self.geometry = geometry
        self.background = background if background is not None else SolidBackground()
        self.bound = float(geometry.bound)
        self.backend, self.eps2d, self.near_plane = backend, float(eps2d), float(near_plane)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, int, int]] = []

    @property
    def device(self) -> torch.device:
        return self.geometry.means.device

    def update_occupancy(self, step: int, generator: torch.Generator | None = None) -> bool:
        """The trainer's per-step hook; Gaussians have no occupancy grid."""
        return False

    def stats(self) -> dict[str, float]:
        """{"gaussians": the current count}."""
        return {"gaussians": float(self.geometry.num_gaussians)}

    def take_statistics(self, accumulate: bool = True) -> None:
        """Add the gradients of the projected centres of the renders since the last call to the cloud's
        densification statistics (call after backward); accumulate=False only forgets them."""
        for means2d, radii, width, height in self._pending if accumulate else ():
            if means2d.grad is not None and means2d.shape[1] == self.geometry.num_gaussians:
                self.geometry.add_statistics(means2d.grad, radii, width, height)
        self._pending.clear()

    def _splat(self, cams: Cameras, height: int, width: int, want_normals: bool):
        """Rasterize the features [rgb (3), normal (3)?] for B cameras: (feat (B,H,W,D), alpha (B,H,W,1),
        depth (B,H,W,1)); degree-1 colours depend on the camera, so they are splatted one camera at a time."""
        from dream3d.render.splat import cameras_to_splat, rasterize_gaussians

        g = self.geometry
        viewmats, ks = cameras_to_splat(cams, height, width)
        extra = [g.normals()] if want_normals else []
        groups = [slice(i, i + 1) for i in range(len(cams))] if g.sh_degree > 0 else [slice(0, len(cams))]
        feats, alphas, depths = [], [], []
        for sl in groups:
            colours = g.view_colors(cams.c2w[sl.start, :3, 3]) if g.sh_degree > 0 else g.base_colors()
            out = rasterize_gaussians(g.means, g.quats, g.scales, g.opacities, torch.cat([colours, *extra], -1),
                                      viewmats[sl], ks[sl], width, height, near_plane=self.near_plane,
                                      eps2d=self.eps2d, backend=self.backend)
            if self.training and torch.is_grad_enabled() and out.means2d.requires_grad:
                out.means2d.retain_grad()
                self._pending.append((out.means2d, out.radii.detach(), width, height))
            feats.append(out.rgb)
            alphas.append(out.alpha)
            depths.append(out.depth)
        return torch.cat(feats), torch.cat(alphas), torch.cat(depths)

    def forward(self, cams: Cameras, height: int, width: int, shading: str = "albedo",
                light_dirs: torch.Tensor | None = None, generator: torch.Generator | None = None,
                with_normal: bool | None = None, stratified: bool | None = None,
                bg_color: torch.Tensor | None = None) -> RenderOut:
        """Render B cameras at height x width (the `VolumeRenderer.forward` signature; generator and stratified
        are unused: splatting is deterministic). bg_color: (3,) or (B,3) replaces the background module."""
        check_shading(shading)
        want_normals = needs_normals(shading) if with_normal is None else (with_normal or needs_normals(shading))
        cams = cams.to(self.device)
        b = len(cams)
        feat, alpha, zdepth = self._splat(cams, height, width, want_normals)
        _, dirs = camera_rays(cams, height, width)  # (B,H,W,3)
        if bg_color is not None:
            bg = torch.as_tensor(bg_color, dtype=torch.float32, device=self.device).reshape(-1, 3).expand(b, 3)
            bg = bg[:, None, None, :].expand(b, height, width, 3)
        else:
            bg = self.background(dirs)
        colour, normal = feat[..., :3], feat[..., 3:6] if want_normals else None
        if shading != "albedo":
            light = light_directions(cams) if light_dirs is None else torch.as_tensor(light_dirs).to(self.device)
            light = light.reshape(-1, 3).float().expand(b, 3)[:, None, None, :]
            unit = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            lit = AMBIENT + (1.0 - AMBIENT) * (unit * light).sum(-1, keepdim=True).clamp_min(0.0)
            colour = (colour if shading == "lambertian" else alpha) * lit
        rgb = colour + (1.0 - alpha) * bg
        forward_axis = -cams.c2w[:, :3, 2].to(dirs)  # OpenGL cameras look down −z
        cosine = (dirs * forward_axis[:, None, None, :]).sum(-1, keepdim=True).clamp_min(1e-6)
        depth = zdepth / cosine

        def image(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 3, 1, 2)

        return RenderOut(rgb=image(rgb), opacity=image(alpha), depth=image(depth),
                         normal=image(normal) if want_normals else None)

    @torch.no_grad()
    def render_chunked(self, cams: Cameras, height: int, width: int, shading: str = "albedo",
                       light_dirs: torch.Tensor | None = None, chunk_rays: int = 1 << 16, with_normal: bool = True,
                       bg_color: torch.Tensor | None = None) -> RenderOut:
        """Evaluation render (no grad) in groups of cameras of about `chunk_rays` pixels; same outputs."""
        per = max(1, chunk_rays // max(1, height * width))
        light = light_directions(cams) if light_dirs is None else torch.as_tensor(light_dirs).reshape(-1, 3)
        light = light.expand(len(cams), 3)
        bgc = None if bg_color is None else torch.as_tensor(bg_color, dtype=torch.float32).reshape(-1, 3).expand(
            len(cams), 3)
        parts = [self.forward(cams[i:i + per], height, width, shading, light[i:i + per], with_normal=with_normal,
                              bg_color=None if bgc is None else bgc[i:i + per]) for i in range(0, len(cams), per)]
        normal = torch.cat([p.normal for p in parts]) if parts[0].normal is not None else None
        return RenderOut(rgb=torch.cat([p.rgb for p in parts]), opacity=torch.cat([p.opacity for p in parts]),
                         depth=torch.cat([p.depth for p in parts]), normal=normal)
