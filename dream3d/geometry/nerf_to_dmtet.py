"""Initialise a DMTet geometry from a NeRF: sdf from the density, albedo field fitted to the rendered albedo.

    sdf(v) = log(τ + ε) − log(σ(v) + ε),   ε = 0.05·τ   (negative inside, where σ > τ)

τ is the export's automatic iso level (`dream3d.export.level.select_level`: the density whose occupancy
silhouettes match the rendered opacity), so the DMTet surface starts where `dream3d export` would put the NeRF's
surface. Densities change roughly exponentially across a NeRF's surface, so the log places the linear
zero-crossings of marching tetrahedra close to the true level set (as the exporter's marching cubes on log σ).

The albedo field is fitted by Adam to the albedo the NeRF renders at the surface (`dream3d.export.bake.
rendered_albedo`: composited along the normal), at points jittered up to one cell along the normal so that it
stays right while the surface moves during refinement.
"""

from __future__ import annotations

import logging
import time

import torch

from dream3d.errors import Dream3DError
from dream3d.export.fields import DEFAULT_CHUNK, geometry_device, query
from dream3d.geometry.dmtet import DMTetGeometry
from dream3d.geometry.mesh_ops import face_normals, vertex_normals

log = logging.getLogger("dream3d")
LOG_EPS = 0.05


@torch.no_grad()
def sdf_from_density(dmtet: DMTetGeometry, geometry, level: float | None = None, level_resolution: int = 128,
                     chunk: int = DEFAULT_CHUNK) -> float:
    """Set dmtet.sdf from the density of `geometry` (any geometry with `bound` and `density`) and zero the
    deformation; returns the density level τ used (automatic when None, on a level_resolution^3 grid)."""
    from dream3d.export.level import select_level
    from dream3d.export.surface import coarse_density_grid

    device = geometry_device(geometry)
    bound = float(geometry.bound)
    if abs(bound - dmtet.bound) > 1e-6:
        raise Dream3DError(f"the NeRF's box (bound {bound}) differs from the tet grid's ({dmtet.bound})")
    coarse = None
    if level is None:
        coarse = coarse_density_grid(geometry, level_resolution, bound, device, chunk)
        if not coarse.max() > 0:
            raise Dream3DError("the NeRF's density is zero everywhere; nothing to refine")
        level = select_level(coarse, bound).level
    res = dmtet.resolution
    if coarse is not None and level_resolution % res == 0:
        k = level_resolution // res  # the tet grid's vertices are a subset of the level grid's
        sigma = coarse[::k, ::k, ::k].reshape(-1)
    else:
        sigma = query(geometry.density, dmtet.grid_vertices.cpu(), device, chunk)
    eps = LOG_EPS * level
    sdf = torch.log(torch.tensor(level + eps)) - torch.log(sigma.double() + eps)
    dmtet.sdf.copy_(sdf.float().to(dmtet.sdf.device))
    dmtet.deform.zero_()
    return float(level)


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


def init_from_geometry(dmtet: DMTetGeometry, geometry, albedo_steps: int = 300, level: float | None = None,
                       seed: int = 0) -> dict:
    """sdf_from_density + fit_albedo; returns {level, faces, albedo_error, seconds}."""
    t0 = time.time()
    level = sdf_from_density(dmtet, geometry, level)
    err = fit_albedo(dmtet, geometry, steps=albedo_steps, seed=seed) if albedo_steps > 0 else float("nan")
    with torch.no_grad():
        faces = int(dmtet.extract_mesh().faces.shape[0])
    stats = {"level": level, "faces": faces, "albedo_error": err, "seconds": time.time() - t0}
    log.info("DMTet initialised from the NeRF: level %.4g, %d faces, albedo error %.3f, %.1f s", level, faces,
             err, stats["seconds"])
    return stats


def init_from_run(renderer, run_dir, albedo_steps: int = 300, seed: int = 0) -> dict:
    """Initialise a MeshRenderer's DMTet geometry (and its background, when of the same kind) from a finished
    NeRF run folder; returns the `init_from_geometry` stats plus the source run."""
    from dream3d.export_run import load_run_renderer

    src_cfg, src = load_run_renderer(run_dir, str(renderer.device))
    if src_cfg.stage != "nerf":
        raise Dream3DError(f"{run_dir} is a {src_cfg.stage} run; the mesh stage starts from a NeRF run")
    stats = init_from_geometry(renderer.geometry, src.geometry, albedo_steps, seed=seed)
    if type(src.background) is type(renderer.background):
        renderer.background.load_state_dict(src.background.state_dict())
    return {**stats, "source": str(run_dir)}
