"""Texture baking: rasterize the mesh in UV space, query the geometry's albedo at each texel's 3D point.

The rasterizer is a small vectorized numpy one. Texel (row r, column c) has its centre at image coordinates
(x, y) = (c + 0.5, r + 0.5), and a vertex with UV (u, v) (v up, see `dream3d.export.uv`) sits at
(x, y) = (u·W, (1 − v)·H). A texel belongs to a triangle when its centre lies inside the triangle's image (edges
included); its barycentric coordinates then give the 3D surface point whose albedo it stores. Texels no triangle
covers (gutters between charts, and the background) take the colour of the nearest covered texel, so bilinear
filtering and mipmaps never pull in a foreign colour at chart seams.

What a texel stores ("rendered", the default): the albedo a camera looking straight at the surface would see,
i.e. the geometry's albedo alpha-composited along the surface normal through the texel's point (from 0.1
outside to 0.1 inside, 8 samples, weights from the density) — for a NeRF the rendered colour comes from where
the density rises, a little outside the extracted iso-surface, and the albedo field can differ there from the
value on the iso-surface itself. "surface" stores the albedo at the iso-surface point.

Albedo values are written as they are (no sRGB conversion): the NeRF's albedo is what its renders display, and a
PNG base-colour texture is displayed as stored, so the textured mesh looks like the NeRF under the same light.
"""

from __future__ import annotations

import numpy as np
import torch

from dream3d.export.fields import DEFAULT_CHUNK, query
from dream3d.export.uv import UVMesh

MAX_CANDIDATES = 1 << 22  # texel candidates per rasterization batch (bounds memory)


def uv_to_pixel(uvs: np.ndarray, height: int, width: int) -> np.ndarray:
    """UVs (N,2), v up -> continuous image coordinates (N,2) = (x right, y down) in texels."""
    uvs = np.asarray(uvs, dtype=np.float64)
    return np.stack([uvs[:, 0] * width, (1.0 - uvs[:, 1]) * height], -1)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each texel centre, and where.

    uvs: (V,2) in [0,1] (v up); faces: (F,3). Returns face index (H,W) int64 (−1 where no triangle covers the
    texel centre) and barycentric coordinates (H,W,3) float64 w.r.t. the face's 3 vertices (zeros where empty).
    """
    tri = uv_to_pixel(uvs, height, width)[faces]  # (F,3,2)
    face_index = np.full((height, width), -1, dtype=np.int64)
    bary = np.zeros((height, width, 3), dtype=np.float64)
    lo, hi = tri.min(1), tri.max(1)  # (F,2)
    # texel centres inside [lo, hi]: c + 0.5 >= lo  <=>  c >= ceil(lo - 0.5)
    c0 = np.clip(np.ceil(lo[:, 0] - 0.5), 0, width).astype(np.int64)
    c1 = np.clip(np.floor(hi[:, 0] - 0.5), -1, width - 1).astype(np.int64)
    r0 = np.clip(np.ceil(lo[:, 1] - 0.5), 0, height).astype(np.int64)
    r1 = np.clip(np.floor(hi[:, 1] - 0.5), -1, height - 1).astype(np.int64)
    nx, ny = np.maximum(c1 - c0 + 1, 0), np.maximum(r1 - r0 + 1, 0)
    count = nx * ny
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    ab, ac = b - a, c - a
    denom = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]  # twice the signed area
    valid = np.abs(denom) > 1e-12
    count = np.where(valid, count, 0)
    # batches of consecutive faces with at most MAX_CANDIDATES candidate texels (a huge face gets its own batch)
    ends = np.cumsum(count)
    start_face = 0
    n_faces = faces.shape[0]
    while start_face < n_faces:
        base = ends[start_face - 1] if start_face else 0
        stop = int(np.searchsorted(ends, base + MAX_CANDIDATES, side="right"))
        stop = max(stop, start_face + 1)
        sel = np.arange(start_face, stop)
        cnt = count[sel]
        total = int(cnt.sum())
        start_face = stop
        if total == 0:
            continue
        fidx = np.repeat(sel, cnt)
        first = np.repeat(np.cumsum(cnt) - cnt, cnt)
        local = np.arange(total) - first
        col = c0[fidx] + local % nx[fidx]
        row = r0[fidx] + local // nx[fidx]
        px, py = col + 0.5 - a[fidx, 0], row + 0.5 - a[fidx, 1]
        d = denom[fidx]
        beta = (px * ac[fidx, 1] - py * ac[fidx, 0]) / d
        gamma = (ab[fidx, 0] * py - ab[fidx, 1] * px) / d
        alpha = 1.0 - beta - gamma
        eps = -1e-9
        inside = (alpha >= eps) & (beta >= eps) & (gamma >= eps)
        row, col, fidx = row[inside], col[inside], fidx[inside]
        face_index[row, col] = fidx
        bary[row, col] = np.stack([alpha[inside], beta[inside], gamma[inside]], -1)
    return face_index, bary


def fill_empty(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy into every texel outside `mask` (H,W) the value of the nearest texel inside it; image (H,W,C)."""
    if mask.all() or not mask.any():
        return image
    from scipy.ndimage import distance_transform_edt

    _, (rows, cols) = distance_transform_edt(~mask, return_indices=True)
    return image[rows, cols]


def rendered_albedo(geometry, points: np.ndarray, normals: np.ndarray, device: torch.device | str = "cpu",
                    chunk: int = DEFAULT_CHUNK, half_width: float = 0.1, samples: int = 8) -> np.ndarray:
    """Albedo (N,3) seen by a ray travelling along −n through p: samples p + s·n for s from +half_width to
    −half_width, weights w_i = T_i·(1 − exp(−σ_i·dt)), colour Σ w_i·a_i / Σ w_i (the surface albedo where the
    segment holds no density). points, normals: (N,3) world units / unit vectors."""
    s = np.linspace(half_width, -half_width, samples)
    dt = 2 * half_width / (samples - 1)
    pts = points[:, None, :] + s[None, :, None] * normals[:, None, :]  # (N,S,3)
    sigma = query(geometry.density, pts.reshape(-1, 3), device, chunk).reshape(-1, samples).double()
    albedo = query(geometry.albedo, pts.reshape(-1, 3), device, chunk).reshape(-1, samples, 3).double()
    alpha = 1 - torch.exp(-sigma * dt)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    w = trans * alpha
    total = w.sum(1, keepdim=True)
    colour = (w[..., None] * albedo).sum(1) / total.clamp_min(1e-12)
    centre = albedo[:, samples // 2]
    return torch.where(total > 1e-6, colour, centre).numpy()


def bake_albedo(geometry, mesh: UVMesh, texture_size: int = 1024, device: torch.device | str = "cpu",
                chunk: int = DEFAULT_CHUNK, mode: str = "rendered") -> tuple[np.ndarray, dict]:
    """Albedo texture (H,W,3) uint8 of `mesh` from the geometry, H = W = texture_size; mode "rendered" or
    "surface" (see the module doc).

    Returns the image and stats: covered texel fraction and the number of albedo queries.
    """
    face_index, bary = rasterize_uv(mesh.uvs, mesh.faces, texture_size, texture_size)
    covered = face_index >= 0
    tri = mesh.vertices.astype(np.float64)[mesh.faces[face_index[covered]]]  # (T,3,3)
    points = np.einsum("tk,tkc->tc", bary[covered], tri)
    if mode == "rendered":
        nrm = np.einsum("tk,tkc->tc", bary[covered], mesh.normals.astype(np.float64)[mesh.faces[face_index[covered]]])
        nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-12)
        colors = rendered_albedo(geometry, points, nrm, device, chunk)
    elif mode == "surface":
        colors = query(geometry.albedo, points, device, chunk).numpy().astype(np.float64)
    else:
        raise ValueError(f"unknown bake mode {mode!r}")
    image = np.zeros((texture_size, texture_size, 3), dtype=np.float64)
    image[covered] = np.clip(colors, 0.0, 1.0)
    image = fill_empty(image, covered)
    texture = np.round(image * 255.0).astype(np.uint8)
    return texture, {"texture_coverage": float(covered.mean()), "albedo_queries": int(points.shape[0])}
