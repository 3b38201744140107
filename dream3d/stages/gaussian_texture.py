"""The Gaussian stage's optional texture refinement: fit the baked UV texture of the exported mesh so that the mesh,
rasterized by the mesh stage's rasterizer (`dream3d.render.rasterize`), shows the colours the Gaussians render.

DreamGaussian's second stage (Tang et al. 2023, arXiv:2309.16653) refines its UV texture through a mesh rasterizer
too, towards a diffusion prior's img2img output; here the target is the Gaussian renders themselves, so the export
needs no prior and is deterministic: the baked colours (density-weighted Gaussian colours at the surface) are
corrected to what the Gaussians actually show where the surface and the splats disagree.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dream3d.cameras import Cameras, make_cameras
from dream3d.export.bake import fill_empty, rasterize_uv
from dream3d.export.uv import UVMesh
from dream3d.render.rasterize import Rasterizer


def refine_cameras(n: int) -> Cameras:
    """n views around the object for the texture fit: azimuths by the golden angle, elevations cycling through
    -10, 15, 40 and 65 degrees."""
    k = torch.arange(n, dtype=torch.float32)
    return make_cameras(torch.tensor([-10.0, 15.0, 40.0, 65.0])[torch.arange(n) % 4], (k * 137.50776) % 360.0)


def refine_texture(renderer, mesh: UVMesh, texture: np.ndarray, steps: int, views: int = 16, size: int = 128,
                   lr: float = 0.01) -> tuple[np.ndarray, dict]:
    """Fit the texture (T,T,3) uint8 of `mesh` by Adam so that the mesh rasterized (`dream3d.render.rasterize`)
    from `views` views at size² shows the colours the Gaussians render there (module doc): the mean squared
    error over the pixels the mesh covers where the Gaussians' opacity exceeds 0.5, against their colour A/a; the
    texture of the lowest error is kept. Texels no view sees keep their baked value; gutters are refilled
    afterwards. Returns (texture, {texture_refine_mse_before, texture_refine_mse_after, texture_refine_pixels})."""
    cams = refine_cameras(views)
    with torch.no_grad():
        out = renderer.render_chunked(cams.to(renderer.device), size, size, shading="albedo", with_normal=False,
                                      bg_color=torch.zeros(3))
        alpha = out.opacity.cpu().permute(0, 2, 3, 1).reshape(-1)
        colour = (out.rgb.cpu().permute(0, 2, 3, 1).reshape(-1, 3) / alpha[:, None].clamp_min(1e-6)).clamp(0, 1)
        verts = torch.from_numpy(mesh.vertices).float()
        frags = Rasterizer("torch").rasterize(verts, torch.from_numpy(mesh.faces), cams, size, size)
        uv = frags.interpolate(torch.from_numpy(mesh.uvs).float())
        valid = alpha[frags.pix] > 0.5
        grid = torch.stack([2 * uv[valid, 0] - 1, 1 - 2 * uv[valid, 1]], -1).reshape(1, 1, -1, 2)
        target = colour[frags.pix][valid]
    if target.shape[0] == 0:
        return texture, {"texture_refine_pixels": 0}
    tex = torch.nn.Parameter(torch.from_numpy(texture).float().div(255.0).permute(2, 0, 1)[None].contiguous())
    opt = torch.optim.Adam([tex], lr=lr)

    def error() -> torch.Tensor:
        pred = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (pred[0, :, 0].T - target).square().mean()

    with torch.enable_grad():  # exports run under no_grad
        before = best = float(error().detach())
        best_tex = tex.detach().clone()
        for _ in range(steps):
            loss = error()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                tex.clamp_(0.0, 1.0)
                now = float(error())
                if now < best:
                    best, best_tex = now, tex.detach().clone()
    image = best_tex[0].permute(1, 2, 0).numpy().astype(np.float64)
    covered = rasterize_uv(mesh.uvs, mesh.faces, texture.shape[0], texture.shape[1])[0] >= 0
    image = fill_empty(image, covered)
    refined = np.round(np.clip(image, 0, 1) * 255.0).astype(np.uint8)
    return refined, {"texture_refine_mse_before": before, "texture_refine_mse_after": best,
                     "texture_refine_pixels": int(target.shape[0])}
