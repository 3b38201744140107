"""Shading models shared by the renderers (the shapes world renders with the same Lambertian model).

    albedo:      rgb = albedo
    lambertian:  rgb = albedo · (AMBIENT + (1 − AMBIENT) · max(0, n·l))
    textureless: rgb = white · (AMBIENT + (1 − AMBIENT) · max(0, n·l))
"""

from __future__ import annotations

import torch

from dream3d.cameras import AMBIENT

SHADINGS = ("albedo", "lambertian", "textureless")


def needs_normals(shading: str) -> bool:
    """Whether `shading` uses surface normals."""
    check_shading(shading)
    return shading != "albedo"


def check_shading(shading: str) -> None:
    if shading not in SHADINGS:
        raise ValueError(f"unknown shading {shading!r}; expected one of {SHADINGS}")


def shade(albedo: torch.Tensor, normals: torch.Tensor | None, light_dirs: torch.Tensor, shading: str) -> torch.Tensor:
    """Shaded colour (M,3) from albedo (M,3) in [0,1], unit normals (M,3), unit light directions (M,3)."""
    check_shading(shading)
    if shading == "albedo":
        return albedo
    if normals is None:
        raise ValueError(f"shading {shading!r} needs normals")
    light = AMBIENT + (1.0 - AMBIENT) * (normals * light_dirs).sum(-1, keepdim=True).clamp_min(0.0)  # (M,1)
    if shading == "lambertian":
        return albedo * light
    return light.expand(-1, 3)
