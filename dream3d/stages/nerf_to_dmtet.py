"""Initialise a DMTet geometry from a NeRF: sdf from the NeRF's solid, albedo field fitted to the rendered albedo.

The solid is the NeRF's level set {σ > τ} (τ: the export's automatic iso level, `dream3d.export.level`) on a fine
grid, grown by a few voxels and cut by the visual hull of the NeRF's rendered silhouettes: the hull gives the
outline the NeRF shows (a level set of a noisy density is rough and falls short of it), the level set keeps the
concavities no silhouette shows (the torus hole). Its signed distance (Euclidean distance transforms, world units,
lightly smoothed) is sampled at the tet vertices and shifted outwards by the fraction of a cell whose rasterized
silhouettes best match the NeRF's (the hull and the smoothing sit slightly inside them). `sdf_from_density` is
the level set alone (no renderer needed).

The albedo field is fitted by Adam to the albedo the NeRF renders at the surface (`dream3d.export.bake.
rendered_albedo`: composited along the normal), at points jittered up to one cell along the normal so that it
stays right while the surface moves during refinement.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from dream3d.errors import ConfigError, Dream3DError
from dream3d.export.fields import DEFAULT_CHUNK, geometry_device
from dream3d.geometry.dmtet import DMTetGeometry
from dream3d.geometry.mesh_ops import face_normals, vertex_normals

log = logging.getLogger("dream3d")


def density_occupancy(geometry, resolution: int = 128, level: float | None = None,
                      chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, float]:
    """{σ > τ} at the vertices of a resolution^3 grid over the geometry's box: (R+1)^3 bool, indexed [x, y, z],
    and τ (the export's automatic level when None)."""
    from dream3d.export.level import select_level
    from dream3d.export.surface import coarse_density_grid

    grid = coarse_density_grid(geometry, resolution, float(geometry.bound), geometry_device(geometry), chunk)
    if not grid.max() > 0:
        raise Dream3DError("the NeRF's density is zero everywhere; nothing to refine")
    if level is None:
        level = select_level(grid, float(geometry.bound)).level
    return grid > level, float(level)


def visual_hull(points: torch.Tensor, cams, opacity: torch.Tensor, threshold: float = 0.5,
                chunk: int = 1 << 21) -> torch.Tensor:
    """Points (P,3) that every camera sees inside its silhouette {opacity > threshold}: (P,) bool.

    opacity: (B,1,H,W) rendered for `cams`, bilinearly interpolated at the projected points; points behind a
    camera or outside its image are outside the hull.
    """
    from dream3d.render.rasterize import project

    h, w = opacity.shape[-2:]
    inside = torch.ones(points.shape[0], dtype=torch.bool)
    for start in range(0, points.shape[0], chunk):
        p = points[start:start + chunk]
        for i in range(len(cams)):
            xy, depth = project(p, cams[i:i + 1], h, w)
            uv = torch.stack([xy[0, :, 0] / w, xy[0, :, 1] / h], -1) * 2 - 1  # pixel -> [-1,1], align_corners=False
            a = F.grid_sample(opacity[i:i + 1].float(), uv[None, None], mode="bilinear", padding_mode="zeros",
                              align_corners=False)[0, 0, 0]
            inside[start:start + chunk] &= (a > threshold) & (depth[0] > 0)
    return inside


def signed_distance_grid(occ: torch.Tensor, bound: float, blur_voxels: float = 0.5) -> torch.Tensor:
    """Signed distance (world units, negative inside) of the solid `occ` ((n+1)^3 bool vertex grid over
    [-bound, bound]^3), by Euclidean distance transforms, Gaussian-smoothed by `blur_voxels` grid steps.

    The surface is put half a step outside the last inside vertex (between it and the first outside one); the
    smoothing removes the staircase a voxel solid has, so marching tetrahedra gets a smooth zero set (half a step
    keeps a cube's edges: on real NeRF runs 0.5 gave the best silhouettes, 1.0 rounded edges). The grid's outer
    layer is forced outside so that the surface is closed.
    """
    from scipy import ndimage

    solid = occ.cpu().numpy().astype(bool)
    solid[[0, -1], :, :] = solid[:, [0, -1], :] = solid[:, :, [0, -1]] = False
    step = 2.0 * bound / (solid.shape[0] - 1)
    outside = ndimage.distance_transform_edt(~solid) - 0.5
    inside = ndimage.distance_transform_edt(solid) - 0.5
    sdf = np.where(solid, -inside, outside) * step
    if blur_voxels > 0:
        sdf = ndimage.gaussian_filter(sdf, blur_voxels, mode="nearest")
    return torch.from_numpy(sdf).float()


def sample_vertex_grid(grid: torch.Tensor, bound: float, points: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of a vertex grid (n+1)^3 over [-bound, bound]^3, indexed [x, y, z], at points
    (P,3) -> (P,)."""
    vol = grid.float()[None, None].permute(0, 1, 4, 3, 2)  # (1,1,Z,Y,X): grid_sample wants (x,y,z) -> (W,H,D)
    coords = (points.float() / bound).reshape(1, 1, 1, -1, 3)
    return F.grid_sample(vol, coords, mode="bilinear", padding_mode="border", align_corners=True).reshape(-1)


@torch.no_grad()
def sdf_from_density(dmtet: DMTetGeometry, geometry, level: float | None = None, level_resolution: int = 128,
                     chunk: int = DEFAULT_CHUNK) -> float:
    """Set dmtet.sdf to the smoothed signed distance of {σ > τ} of `geometry` (any geometry with `bound` and
    `density`) and zero the deformation; returns τ (automatic when None, on a level_resolution^3 grid)."""
    bound = _check_bound(dmtet, geometry)
    occ, level = density_occupancy(geometry, level_resolution, level, chunk)
    sdf = signed_distance_grid(occ, bound)
    dmtet.sdf.copy_(sample_vertex_grid(sdf, bound, dmtet.grid_vertices.cpu()).to(dmtet.sdf.device))
    dmtet.deform.zero_()
    return level


@torch.no_grad()
def sdf_from_nerf(dmtet: DMTetGeometry, renderer, carve_views: int = 96, image_size: int = 128,
                  level_resolution: int = 192, dilation: int = 2, seed: int = 0, chunk: int = DEFAULT_CHUNK) -> dict:
    """Set dmtet.sdf from a NeRF renderer: its level set {σ > τ}, carved by the visual hull of its rendered
    silhouettes, as a smoothed signed distance, then offset to match those silhouettes (see module doc).

    carve_views: random training cameras rendered at image_size^2 for the hull and the offset (0: level set
    only); dilation: grid steps the level set is grown by before the hull cuts it (the hull decides the outline,
    the level set keeps concavities no silhouette shows). Returns {level, offset, silhouette_iou} (offset in
    world units; silhouette_iou: mesh vs NeRF silhouettes over the carving views, nan without carving).
    """
    from scipy import ndimage

    from dream3d.cameras import sample_cameras
    from dream3d.export.surface import vertex_grid_points

    if carve_views < 0 or (carve_views > 0 and not 16 <= image_size <= 1024):
        raise ConfigError(f"mesh.carve_views must be >= 0 and mesh.carve_resolution in [16, 1024], got "
                          f"{carve_views} and {image_size}")
    geometry = renderer.geometry
    bound = _check_bound(dmtet, geometry)
    occ, level = density_occupancy(geometry, level_resolution, None, chunk)
    stats = {"level": level, "offset": 0.0, "silhouette_iou": float("nan")}
    if carve_views > 0:
        cams = sample_cameras(carve_views, generator=torch.Generator().manual_seed(seed))
        src = geometry_device(geometry)
        opacity = torch.cat([renderer.render_chunked(cams[i:i + 8].to(src), image_size, image_size,
                                                     shading="albedo", with_normal=False).opacity.cpu()
                             for i in range(0, carve_views, 8)])
        grown = torch.from_numpy(ndimage.binary_dilation(occ.numpy(), iterations=dilation)) if dilation else occ
        hull = visual_hull(vertex_grid_points(level_resolution, bound).reshape(-1, 3), cams, opacity)
        occ = grown & hull.reshape(occ.shape)
    sdf = sample_vertex_grid(signed_distance_grid(occ, bound), bound, dmtet.grid_vertices.cpu())
    dmtet.deform.zero_()
    dmtet.sdf.copy_(sdf.to(dmtet.sdf.device))
    if carve_views > 0:
        stats.update(_match_silhouettes(dmtet, sdf, cams, opacity > 0.5))
    if dmtet.extract_mesh().faces.shape[0] == 0:
        raise Dream3DError("the NeRF has no surface at its iso level; nothing to refine")
    return stats


def _match_silhouettes(dmtet: DMTetGeometry, sdf: torch.Tensor, cams, target: torch.Tensor,
                       steps: int = 7) -> dict:
    """Shift the sdf by the constant (0 to 3/4 of a tet cell outwards) whose rasterized mesh silhouettes best
    match `target` (B,1,H,W) bool in mean IoU: a hull of many views sits slightly inside each view's silhouette,
    and the smoothing rounds it inwards a little more. Leaves dmtet.sdf at the best shift."""
    from dream3d.render.rasterize import Rasterizer

    rast = Rasterizer("auto")
    h, w = target.shape[-2:]
    t = target[:, 0].to(dmtet.sdf.device)
    best = (-1.0, 0.0)
    for k in range(steps):
        offset = 0.125 * k * dmtet.cell
        dmtet.sdf.copy_((sdf - offset).to(dmtet.sdf.device))
        mesh = dmtet.extract_mesh()
        if mesh.faces.shape[0] == 0:
            continue
        covered = rast.rasterize(mesh.vertices, mesh.faces, cams.to(dmtet.sdf.device), h, w).face_id >= 0
        iou = float(((covered & t).flatten(1).sum(1) / (covered | t).flatten(1).sum(1).clamp_min(1)).mean())
        best = max(best, (iou, offset))
    dmtet.sdf.copy_((sdf - best[1]).to(dmtet.sdf.device))
    return {"offset": best[1], "silhouette_iou": best[0]}


def _check_bound(dmtet: DMTetGeometry, geometry) -> float:
    bound = float(geometry.bound)
    if abs(bound - dmtet.bound) > 1e-6:
        raise Dream3DError(f"the NeRF's box (bound {bound}) differs from the tet grid's ({dmtet.bound})")
    return bound


def surface_samples(vertices: torch.Tensor, faces: torch.Tensor, n: int,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n area-uniform points (n,3) on a mesh and the interpolated unit vertex normals there (n,3)."""
    area = face_normals(vertices, faces).norm(dim=-1)
    f = torch.multinomial(area / area.sum(), n, replacement=True, generator=generator)
    r = torch.rand(n, 2, generator=generator, dtype=vertices.dtype)
    flip = r.sum(1) > 1
    r[flip] = 1 - r[flip]
    b = torch.stack([1 - r[:, 0] - r[:, 1], r[:, 0], r[:, 1]], -1)
    tri = faces[f]
    pts = (b[..., None] * vertices[tri]).sum(1)
    vn = vertex_normals(vertices, faces)
    nrm = torch.nn.functional.normalize((b[..., None] * vn[tri]).sum(1), dim=-1)
    return pts, nrm


def fit_albedo(dmtet: DMTetGeometry, geometry, steps: int = 300, n_points: int = 65536, batch: int = 8192,
               lr: float = 0.01, seed: int = 0, chunk: int = DEFAULT_CHUNK) -> float:
    """Fit dmtet's albedo field to the albedo `geometry` renders at dmtet's current surface; returns the final
    mean absolute error (per channel, in [0,1]) on the sample pool."""
    from dream3d.export.bake import rendered_albedo

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mesh = dmtet.extract_mesh()
        if mesh.faces.shape[0] == 0:
            raise Dream3DError("the NeRF has no surface at its iso level; nothing to refine")
        verts, faces = mesh.vertices.detach().cpu().double(), mesh.faces.cpu()
        pts, nrm = surface_samples(verts, faces, n_points, gen)
        target = torch.from_numpy(rendered_albedo(geometry, pts.numpy(), nrm.numpy(), geometry_device(geometry),
                                                  chunk)).float()
        jitter = (torch.rand(n_points, 1, generator=gen, dtype=torch.float64) * 2 - 1) * dmtet.cell
        x = (pts + jitter * nrm).float()
    device = dmtet.sdf.device
    x, target = x.to(device), target.to(device)
    params = list(dmtet.encoding.parameters()) + list(dmtet.mlp.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=1e-15)
    for _ in range(steps):
        idx = torch.randint(0, n_points, (batch,), generator=gen).to(device)
        loss = (dmtet.albedo(x[idx]) - target[idx]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = torch.cat([(dmtet.albedo(xs) - ts).abs() for xs, ts in zip(x.split(chunk), target.split(chunk))])
    return float(err.mean())


def init_from_nerf(dmtet: DMTetGeometry, renderer, albedo_steps: int = 300, carve_views: int = 96,
                   carve_resolution: int = 128, seed: int = 0) -> dict:
    """sdf_from_nerf + fit_albedo on a NeRF renderer; returns {level, offset, silhouette_iou, faces,
    albedo_error, seconds}."""
    t0 = time.time()
    stats = sdf_from_nerf(dmtet, renderer, carve_views, carve_resolution, seed=seed)
    with torch.no_grad():
        dmtet.sdf_anchor.copy_(dmtet.sdf)
    err = fit_albedo(dmtet, renderer.geometry, steps=albedo_steps, seed=seed) if albedo_steps > 0 else float("nan")
    with torch.no_grad():
        faces = int(dmtet.extract_mesh().faces.shape[0])
    stats.update(faces=faces, albedo_error=err, seconds=time.time() - t0)
    log.info("DMTet initialised from the NeRF: level %.4g, offset %.4f, silhouette IoU %.3f, %d faces, albedo "
             "error %.3f, %.1f s", stats["level"], stats["offset"], stats["silhouette_iou"], faces, err,
             stats["seconds"])
    return stats
