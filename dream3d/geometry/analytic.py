"""Parameter-free geometries with the geometry interface, built from the shapes world's analytic SDFs.

Used to check the renderer against the shapes-world ground truth (same object, same shading) and to render a
known shape through the exact code path a NeRF takes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from dream3d.errors import ConfigError
from dream3d.geometry.normals import NORMAL_TYPES, density_normals
from dream3d.shapes.primitives import COLORS, sdf


class SDFDensityField(nn.Module):
    """σ(x) = density_max · sigmoid(−sdf(x) / sharpness) with a constant albedo.

    shape: a shapes-world shape name; color: a shapes-world colour name or an rgb triple in [0,1];
    sharpness: width of the density transition (world units); normals are −∇σ/|∇σ| (∥ ∇sdf outside the medial
    axis) computed like ImplicitVolume's.
    """

    def __init__(self, shape: str, color: str | Sequence[float] = (1.0, 1.0, 1.0), density_max: float = 200.0,
                 sharpness: float = 0.01, bound: float = 1.0, normal_type: str = "finite_difference",
                 fd_eps: float = 1e-3) -> None:
        super().__init__()
        sdf(shape, torch.zeros(1, 3))  # validates the name (PromptError on an unknown shape)
        if normal_type not in NORMAL_TYPES:
            raise ConfigError(f"unknown normal_type {normal_type!r}; expected one of {', '.join(NORMAL_TYPES)}")
        self.shape = shape
        rgb = COLORS[color] if isinstance(color, str) else tuple(color)
        self.register_buffer("color", torch.tensor(rgb, dtype=torch.float32).reshape(3))
        self.density_max, self.sharpness, self.bound = float(density_max), float(sharpness), float(bound)
        self.normal_type, self.fd_eps = normal_type, float(fd_eps)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """σ (N,) at world points x (N,3)."""
        return self.density_max * torch.sigmoid(-sdf(self.shape, x) / self.sharpness)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """Constant albedo (N,3)."""
        return self.color.to(x.dtype).expand(x.shape[0], 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(density (N,), albedo (N,3))."""
        return self.density(x), self.albedo(x)

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Unit outward normals (N,3)."""
        return density_normals(self.density, x, self.normal_type, self.fd_eps)
