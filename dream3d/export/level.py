"""Automatic iso level: the density τ whose surface {σ > τ} has the silhouettes the NeRF renders.

A NeRF has no surface, only a density σ; its rendered silhouette is the set of rays whose accumulated opacity
α = 1 − exp(−∫σ dt) exceeds 0.5. The silhouette of the solid {σ > τ} seen along the same ray is "max σ along
the ray > τ". So each ray r gives two numbers, α_r and m_r = max_t σ(r(t)), and the level is the τ whose
silhouette {r : m_r > τ} best matches the target {r : α_r > 0.5} in IoU over a few views:

    τ* = argmax_τ |{m > τ} ∩ {α > 0.5}| / |{m > τ} ∪ {α > 0.5}|

Sorting the rays by m makes this exact and cheap: thresholds between consecutive sorted m values give every
distinct silhouette, and cumulative sums give their IoUs; τ* is the geometric mean of the two m values around the
best cut. (For a sharp field this lands where the density crosses from "transparent" to "opaque"; for a soft
sphere of radius R it puts the surface where grazing rays reach opacity 0.5, a little outside R.)

The rays are orthographic, through the trilinear interpolant of a density grid sampled at the vertices of a
regular grid over the box (the exporter's coarse grid): 3 axis views with one ray per grid line (integrated
exactly, no resampling) and the 4 body diagonals marched at a fixed step with `torch.nn.functional.grid_sample`.
Orthographic views need no camera conventions, and opposite directions give the same α and m, so these 7
directions are 7 distinct views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dream3d.errors import Dream3DError

DIAGONAL_DIRECTIONS: tuple[tuple[float, float, float], ...] = (
    (1.0, 1.0, 1.0), (1.0, 1.0, -1.0), (1.0, -1.0, 1.0), (-1.0, 1.0, 1.0),
)


@dataclass
class LevelChoice:
    """The chosen iso level and how well its silhouettes match the rendered ones.

    level: density τ (per world unit); silhouette_iou: IoU of {m > τ} and {α > threshold} over all rays (1 = the
    occupancy's silhouettes are exactly the opacity silhouettes); opaque_rays: number of rays with α > threshold.
    """

    level: float
    silhouette_iou: float
    opaque_rays: int


def _basis(direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors (3,), (3,) orthogonal to the unit `direction` (3,) and to each other."""
    helper = torch.tensor([0.0, 1.0, 0.0], dtype=direction.dtype)
    if abs(float(direction @ helper)) > 0.9:
        helper = torch.tensor([1.0, 0.0, 0.0], dtype=direction.dtype)
    e1 = torch.linalg.cross(direction, helper)
    e1 = e1 / e1.norm()
    return e1, torch.linalg.cross(direction, e1)


def axis_views(grid: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthographic views along x, y and z with one ray per grid line: exact for the trilinear field.

    Along a grid line the trilinear interpolant is piecewise linear between the vertex samples, so the trapezoid
    rule gives its exact integral and the vertex maximum its exact maximum. grid: (n+1)^3 over [-bound, bound]^3.
    Returns opacity α (R,) and max density m (R,) for the 3(n+1)^2 rays.
    """
    g = grid.float().clamp_min(0)
    h = 2.0 * bound / (g.shape[0] - 1)
    alphas, maxima = [], []
    for axis in range(3):
        ends = g.select(axis, 0) + g.select(axis, -1)
        opt_depth = (g.sum(axis) - 0.5 * ends) * h
        alphas.append((1.0 - torch.exp(-opt_depth)).reshape(-1))
        maxima.append(g.amax(axis).reshape(-1))
    return torch.cat(alphas), torch.cat(maxima)


def march_views(grid: torch.Tensor, bound: float, samples_per_side: int = 64,
                directions: tuple[tuple[float, float, float], ...] = DIAGONAL_DIRECTIONS,
                max_points: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthographic ray marching through a vertex density grid along arbitrary directions.

    grid: (n+1, n+1, n+1) densities at the vertices of an n^3 grid over [-bound, bound]^3, indexed [x, y, z],
    trilinearly interpolated (zero outside the box). samples_per_side: the ray spacing and the step along rays
    are 2·bound / samples_per_side (world units); each view covers the ball of radius √3·bound around the box.
    Returns opacity α (R,) in [0,1] and max density m (R,) per ray, for the rays of all views concatenated.
    """
    step = 2.0 * bound / samples_per_side
    half = math.sqrt(3.0) * bound  # the box fits in the ball of radius √3·bound
    n_side = int(math.ceil(2 * half / step))
    offsets = (torch.arange(n_side, dtype=torch.float32) + 0.5) * step - half  # (S,) plane and depth coordinates
    vol = grid.float()[None, None].permute(0, 1, 4, 3, 2)  # (1,1,Z,Y,X): grid_sample wants (x,y,z) -> (W,H,D)
    alphas, maxima = [], []
    for d in directions:
        direction = torch.tensor(d, dtype=torch.float32)
        direction = direction / direction.norm()
        e1, e2 = _basis(direction)
        rays = (offsets[:, None, None] * e1 + offsets[None, :, None] * e2).reshape(-1, 3)  # (R,3) on the plane
        opt_depth = torch.zeros(rays.shape[0])
        ray_max = torch.zeros(rays.shape[0])
        depth_chunk = max(1, max_points // rays.shape[0])  # march in slabs so that memory stays bounded
        for start in range(0, n_side, depth_chunk):
            t = offsets[start:start + depth_chunk]  # (T,)
            pts = rays[None] + t[:, None, None] * direction  # (T,R,3)
            coords = (pts / bound).reshape(1, 1, t.shape[0], rays.shape[0], 3)
            sigma = F.grid_sample(vol, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
            sigma = sigma.reshape(t.shape[0], rays.shape[0]).clamp_min(0)
            opt_depth += sigma.sum(0) * step
            ray_max = torch.maximum(ray_max, sigma.amax(0))
        alphas.append(1.0 - torch.exp(-opt_depth))
        maxima.append(ray_max)
    return torch.cat(alphas), torch.cat(maxima)


def level_from_rays(alpha: torch.Tensor, ray_max: torch.Tensor, opacity_threshold: float = 0.5) -> LevelChoice:
    """The level τ maximising the IoU of {ray_max > τ} with {alpha > opacity_threshold} (see module docstring).

    alpha, ray_max: (R,) per ray. Raises `Dream3DError` when no ray is opaque (an empty field).
    """
    target = alpha > opacity_threshold
    n_target = int(target.sum())
    if n_target == 0:
        raise Dream3DError("cannot export: the density field is empty (no view ray reaches opacity "
                           f"{opacity_threshold:g}); train longer or check the run")
    order = torch.argsort(ray_max, descending=True)
    m_sorted = ray_max[order].double()
    inter = torch.cumsum(target[order].double(), 0)  # |top-k ∩ target| for k = 1..R
    k = torch.arange(1, m_sorted.shape[0] + 1, dtype=torch.float64)
    iou = inter / (k + n_target - inter)
    # a cut is only possible between distinct values: for ties keep the last index of each run of equal m
    distinct = torch.ones_like(m_sorted, dtype=torch.bool)
    distinct[:-1] = m_sorted[:-1] > m_sorted[1:]
    distinct &= m_sorted > 0  # τ must stay above empty space (density 0)
    iou = torch.where(distinct, iou, torch.full_like(iou, -1.0))
    best = int(torch.argmax(iou))
    if iou[best] < 0:
        raise Dream3DError("cannot export: the density field is degenerate (no density level separates the "
                           "object from empty space)")
    above = float(m_sorted[best])
    below = float(m_sorted[best + 1]) if best + 1 < m_sorted.shape[0] else 0.0
    level = math.sqrt(above * below) if below > 0 else 0.5 * above
    return LevelChoice(level=level, silhouette_iou=float(iou[best]), opaque_rays=n_target)


def select_level(grid: torch.Tensor, bound: float, opacity_threshold: float = 0.5,
                 samples_per_side: int = 64) -> LevelChoice:
    """Iso level for the vertex density grid (n+1)^3 over [-bound, bound]^3 (see the module docstring): the rays
    of the 3 exact axis views and of the 4 body-diagonal views, pooled."""
    a_axis, m_axis = axis_views(grid, bound)
    a_diag, m_diag = march_views(grid, bound, samples_per_side)
    return level_from_rays(torch.cat([a_axis, a_diag]), torch.cat([m_axis, m_diag]), opacity_threshold)
