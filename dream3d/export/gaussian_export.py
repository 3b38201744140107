"""Export of a Gaussian-stage renderer: Gaussians -> density grid -> automatic level -> mesh -> UV atlas -> baked
(and optionally refined) texture -> .glb / .obj, plus the Gaussians themselves as a 3DGS `.ply`.

1. **Density grid.** The cloud's field Σ_i o_i exp(−½ dᵀ Σ_i⁻¹ d) at the vertices of a resolution^3 grid over the
   box, and its density-weighted colour (`GaussianCloud.density_grid`: each Gaussian evaluated within 3σ only).
2. **Level.** As the NeRF export (`dream3d.export.level`): the τ whose solid {σ > τ} has the silhouettes the
   renderer shows, i.e. maximising the IoU of {max σ along the ray > τ} with {rendered opacity > 0.5} over the
   pixels of 16 views (8 azimuths at elevations 0 and 40 degrees). Here the opacity is the splatted alpha
   itself; for one isotropic Gaussian (α = o·exp(−½ d²/s²) at distance d from its centre, and the same value is
   the density's maximum along that ray) this gives τ = 0.5 and the sphere of radius s·√(2 ln(2o)).
3. **Mesh.** Marching cubes, floaters (components below `min_component_fraction` of the largest's area)
   removed, smoothing, decimation (`dream3d.export.surface.surface_from_grid`).
4. **Texture.** xatlas atlas and the density-weighted colour of the Gaussians at each texel's surface point
   (`GridColour`, `bake_albedo` "surface" mode), then an optional refinement of the texture (`refine`; the Gaussian stage's
   fits it to the Gaussian renders through the mesh rasterizer: `dream3d.stages.gaussian_texture`).
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dream3d.cameras import Cameras, camera_rays, make_cameras
from dream3d.errors import Dream3DError
from dream3d.export.fields import DEFAULT_CHUNK
from dream3d.export.gaussian_ply import GAUSSIANS_PLY, write_gaussian_ply
from dream3d.export.level import LevelChoice, level_from_rays
from dream3d.export.surface import Surface, surface_from_grid
from dream3d.export.textured import check_export_args, write_textured
from dream3d.export.uv import UVMesh


class GridColour:
    """The Gaussians' colour at any point, from their grids (`GaussianCloud.density_grid`): the trilinear
    interpolant of Σ w_i c_i divided by that of Σ w_i (mid grey where both vanish). What the baker queries."""

    def __init__(self, density: torch.Tensor, weighted_colour: torch.Tensor, bound: float) -> None:
        grid = torch.cat([weighted_colour, density[..., None]], -1).float().cpu()  # (n,n,n,4) [x,y,z]
        self.volume = grid.permute(3, 2, 1, 0)[None]  # (1,4,Z,Y,X): grid_sample reads (x,y,z) as (W,H,D)
        self.bound = float(bound)

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """(P,3) in [0,1] at points (P,3) world units."""
        coords = (points.float().cpu() / self.bound).reshape(1, 1, 1, -1, 3)
        v = F.grid_sample(self.volume, coords, mode="bilinear", padding_mode="border", align_corners=True)
        v = v.reshape(4, -1).T
        return torch.where(v[:, 3:] > 1e-8, v[:, :3] / v[:, 3:].clamp_min(1e-8), torch.full_like(v[:, :3], 0.5))


def level_cameras() -> Cameras:
    """The 16 views the level is chosen on: 8 azimuths at elevations 0 and 40 degrees."""
    return make_cameras(torch.tensor([0.0] * 8 + [40.0] * 8), torch.arange(16) % 8 * 45.0)


def ray_maxima(grid: torch.Tensor, bound: float, origins: torch.Tensor, dirs: torch.Tensor,
               max_points: int = 1 << 22) -> torch.Tensor:
    """Max over each ray (origins, unit dirs (R,3)) of the trilinear vertex grid (n+1)^3 over [-bound, bound]^3
    (zero outside), sampled every grid step across the ball of radius √3·bound around the origin: (R,)."""
    n = grid.shape[0] - 1
    step = 2.0 * bound / n
    half = math.sqrt(3.0) * bound
    centre_t = -(origins * dirs).sum(-1)  # the ray's closest approach to the origin
    offsets = torch.arange(-half, half + step, step)
    vol = grid.float()[None, None].permute(0, 1, 4, 3, 2)  # grid_sample reads (x,y,z) as (W,H,D)
    out = torch.zeros(origins.shape[0])
    per = max(1, max_points // offsets.shape[0])
    for s in range(0, origins.shape[0], per):
        o, d, t0 = origins[s:s + per], dirs[s:s + per], centre_t[s:s + per]
        pts = o[:, None] + (t0[:, None, None] + offsets[None, :, None]) * d[:, None]  # (r,S,3)
        coords = (pts / bound).reshape(1, 1, -1, 1, 3).float()
        sigma = F.grid_sample(vol, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
        out[s:s + per] = sigma.reshape(o.shape[0], -1).amax(1)
    return out


def silhouette_level(renderer, grid: torch.Tensor, size: int = 64) -> LevelChoice:
    """The density level whose solid's silhouettes best match the rendered opacity > 0.5 (module doc, step 2)."""
    cams = level_cameras()
    alpha = renderer.render_chunked(cams.to(renderer.device), size, size, shading="albedo",
                                    with_normal=False).opacity.cpu()
    origins, dirs = camera_rays(cams, size, size)
    ray_max = ray_maxima(grid, float(renderer.geometry.bound), origins.reshape(-1, 3), dirs.reshape(-1, 3))
    return level_from_rays(alpha.reshape(-1), ray_max)


def extract_gaussian_surface(renderer, resolution: int = 128, level: float | None = None,
                             min_component_fraction: float = 0.05, smooth_iterations: int = 3,
                             max_faces: int = 30000) -> tuple[Surface, GridColour]:
    """Steps 1-3 of the module doc: the closed outward mesh of the Gaussians' density at the automatic (or given)
    level, and their colour field for baking. Raises `Dream3DError` when the cloud shows nothing."""
    cloud = renderer.geometry
    t0 = time.perf_counter()
    density, colour = (t.cpu() for t in cloud.density_grid(resolution))
    if not density.max() > 0:
        raise Dream3DError("cannot export: the Gaussians' density is zero everywhere in the box")
    t1 = time.perf_counter()
    stats: dict = {}
    if level is None:
        choice = silhouette_level(renderer, density)
        level, stats["silhouette_iou"] = choice.level, choice.silhouette_iou
    t2 = time.perf_counter()
    surface = surface_from_grid(density, level, cloud.bound, min_component_fraction=min_component_fraction,
                                smooth_iterations=smooth_iterations, max_faces=max_faces)
    surface.stats.update(stats, time_density_s=t1 - t0, time_level_s=t2 - t1)
    return surface, GridColour(density, colour, cloud.bound)


def export_gaussians(renderer, out_dir: str | os.PathLike, formats=("glb", "obj"), resolution: int = 128,
                     texture_size: int = 1024, *,
                     refine: Callable[[UVMesh, np.ndarray], tuple[np.ndarray, dict]] | None = None,
                     level: float | None = None, max_faces: int = 30000, min_component_fraction: float = 0.05,
                     uv_padding: int = 4, name: str = "model", chunk: int = DEFAULT_CHUNK) -> dict:
    """Write `<name>.glb` / `<name>.obj` (+ .mtl, texture) of the Gaussians' surface and `gaussians.ply` into
    `out_dir`; returns {"files": {"glb"|"obj"|"mtl"|"texture"|"ply": Path}, "stats": {...}} like
    `dream3d.export.export_geometry` (plus gaussians, the count). refine: (uv mesh, baked texture) -> (texture,
    stats), e.g. the Gaussian stage's fit of the texture to the Gaussian renders."""
    formats = check_export_args(formats, texture_size)
    cloud = renderer.geometry
    t0 = time.perf_counter()
    surface, colour = extract_gaussian_surface(renderer, resolution, level, min_component_fraction,
                                               max_faces=max_faces)
    t1 = time.perf_counter()
    files, mesh, write_stats = write_textured(colour, surface.vertices, surface.faces, surface.normals, out_dir,
                                              formats, texture_size, uv_padding, name, torch.device("cpu"), chunk,
                                              bake_mode="surface", refine=refine)
    files["ply"] = write_gaussian_ply(os.path.join(out_dir, GAUSSIANS_PLY), cloud)
    stats = dict(surface.stats)
    stats.update(write_stats, vertices=int(mesh.vertices.shape[0]), faces=int(mesh.faces.shape[0]),
                 vertices_before_uv=int(surface.vertices.shape[0]), resolution=int(resolution),
                 texture_size=int(texture_size), gaussians=cloud.num_gaussians, time_surface_s=t1 - t0,
                 time_total_s=time.perf_counter() - t0)
    return {"files": files, "stats": stats}
