"""Analytic primitives of the shapes world: signed distance functions, occupancy, closed-form volumes, colors.

All shapes are centred at the origin, axis-aligned, y-up, inside the unit cube [-1,1]^3. The wedge's front
(+z, facing a camera at azimuth 0) is a slope and its back a vertical wall, so front and back views differ.
"""

from __future__ import annotations

import math

import torch

from dream3d.errors import PromptError

# Named colors (linear RGB in [0,1]); names are the prompt words.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.75),
    "orange": (1.00, 0.50, 0.05),
}

SPHERE_R = 0.6
CUBE_H = 0.5  # half side
CYL_R, CYL_H = 0.5, 0.55  # radius, half height
CONE_R, CONE_H = 0.6, 0.55  # base radius, half height (base at y=-H, apex at y=+H)
TORUS_R, TORUS_r = 0.5, 0.22  # major, minor radius; lies flat (axis y)
WEDGE_H = 0.5  # box half side, cut by the plane y + z = 0 (high at the back, low at the front)


def _length(*xs: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sum(x * x for x in xs))


def _sdf_sphere(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - SPHERE_R


def _sdf_box(p: torch.Tensor, h: float) -> torch.Tensor:
    q = p.abs() - h
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def _sdf_cube(p: torch.Tensor) -> torch.Tensor:
    return _sdf_box(p, CUBE_H)


def _sdf_cylinder(p: torch.Tensor) -> torch.Tensor:
    d0 = _length(p[..., 0], p[..., 2]) - CYL_R
    d1 = p[..., 1].abs() - CYL_H
    return _length(d0.clamp_min(0), d1.clamp_min(0)) + torch.maximum(d0, d1).clamp_max(0)


def _sdf_cone(p: torch.Tensor) -> torch.Tensor:
    # exact SDF of a capped cone (2D: radial distance q, height y), base radius R at y=-H, apex at y=+H
    q = _length(p[..., 0], p[..., 2])
    y = p[..., 1]
    h, r = 2 * CONE_H, CONE_R
    yy = y + CONE_H  # 0 at the base, h at the apex
    # distance to the base disc segment and to the slanted side segment, in the (q, yy) half plane
    # side segment from (r, 0) to (0, h)
    ax, ay = r, 0.0
    bx, by = -r, h  # b - a
    t = (((q - ax) * bx + (yy - ay) * by) / (bx * bx + by * by)).clamp(0, 1)
    d_side = _length(q - ax - t * bx, yy - ay - t * by)
    d_base = _length((q - r).clamp_min(0), yy)
    d = torch.minimum(d_side, d_base)
    inside = (yy > 0) & (q * h < r * (h - yy))
    return torch.where(inside, -d, d)


def _sdf_torus(p: torch.Tensor) -> torch.Tensor:
    return _length(_length(p[..., 0], p[..., 2]) - TORUS_R, p[..., 1]) - TORUS_r


def _sdf_wedge(p: torch.Tensor) -> torch.Tensor:
    # intersection of the box with the half space y + z <= 0 (max of SDFs; exact outside up to the edge, a bound)
    plane = (p[..., 1] + p[..., 2]) / math.sqrt(2.0)
    return torch.maximum(_sdf_box(p, WEDGE_H), plane)


SHAPES = {
    "sphere": _sdf_sphere,
    "cube": _sdf_cube,
    "cylinder": _sdf_cylinder,
    "cone": _sdf_cone,
    "torus": _sdf_torus,
    "wedge": _sdf_wedge,
}

# Closed-form volumes (world units^3), the independent check of the SDFs.
VOLUMES = {
    "sphere": 4.0 / 3.0 * math.pi * SPHERE_R**3,
    "cube": (2 * CUBE_H) ** 3,
    "cylinder": math.pi * CYL_R**2 * 2 * CYL_H,
    "cone": math.pi * CONE_R**2 * 2 * CONE_H / 3.0,
    "torus": 2 * math.pi**2 * TORUS_R * TORUS_r**2,
    "wedge": 0.5 * (2 * WEDGE_H) ** 3,
}


def _check_shape(shape: str) -> None:
    if shape not in SHAPES:
        raise PromptError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


def sdf(shape: str, points: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) of `shape` at points (...,3) -> (...)."""
    _check_shape(shape)
    return SHAPES[shape](points)


def volume(shape: str) -> float:
    """Closed-form volume of `shape`."""
    _check_shape(shape)
    return VOLUMES[shape]


def grid_points(resolution: int, bound: float = 1.0) -> torch.Tensor:
    """Cell centres of a resolution^3 grid over [-bound, bound]^3, shape (R,R,R,3), indexed [x, y, z]."""
    c = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * bound - bound
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1)


def occupancy(shape: str, resolution: int = 64, bound: float = 1.0) -> torch.Tensor:
    """Ground-truth occupancy (bool, (R,R,R) indexed [x,y,z]) of `shape` sampled at the cell centres."""
    return sdf(shape, grid_points(resolution, bound)) < 0
