"""DMTet geometry (Shen et al. 2021): an sdf and a bounded offset per tet-grid vertex, meshed by marching
tetrahedra every step, plus an albedo field (hash grid + MLP) for the texture.

    vertex position  p_i = grid_i + deform_fraction · cell · tanh(δ_i)     (|offset| < deform_fraction cells)
    surface          marching tetrahedra of sdf on the deformed grid (sdf < 0 inside)
    albedo(x)        sigmoid(MLP(hashgrid((x + bound) / 2·bound)))

Gradients of anything rendered from the mesh reach sdf and δ through the zero-crossing interpolation
(`dream3d.geometry.tets.marching_tets`). The grid itself is not saved (it is rebuilt from the resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dream3d.encoding import HashGridEncoding
from dream3d.errors import ConfigError
from dream3d.geometry.implicit_volume import _mlp
from dream3d.geometry.tets import marching_tets, tet_grid


@dataclass
class TriMesh:
    """vertices (M,3) world units (differentiable), faces (K,3) long (counter-clockwise seen from outside),
    grid_edges (M,2): the tet-grid edge each vertex lies on."""

    vertices: torch.Tensor
    faces: torch.Tensor
    grid_edges: torch.Tensor


class DMTetGeometry(nn.Module):
    """Deformable tetrahedral grid geometry with an albedo field.

    Args:
        resolution: cubes per axis of the tet grid (6 tets each); 32-128 are sensible.
        bound: half side of the world box.
        deform_fraction: largest vertex offset per axis, as a fraction of a cell.
        n_levels .. per_level_scale, mlp_width, encoding_backend: the albedo hash grid and MLP
            (as `ImplicitVolume`).
    """

    def __init__(self, resolution: int = 64, bound: float = 1.0, deform_fraction: float = 0.25,
                 n_levels: int = 16, n_features_per_level: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, per_level_scale: float = 1.4472692374403782, mlp_width: int = 64,
                 encoding_backend: str = "auto") -> None:
        super().__init__()
        if not 4 <= resolution <= 256:
            raise ConfigError(f"mesh.tet_resolution must be between 4 and 256, got {resolution}")
        if not 0.0 <= deform_fraction < 0.5:
            raise ConfigError(f"mesh.deform_fraction must be in [0, 0.5), got {deform_fraction}")
        self.resolution, self.bound, self.deform_fraction = int(resolution), float(bound), float(deform_fraction)
        self.cell = 2.0 * self.bound / self.resolution
        verts, tets = tet_grid(self.resolution, self.bound)
        self.register_buffer("grid_vertices", verts, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.sdf = nn.Parameter(torch.zeros(verts.shape[0]))
        self.deform = nn.Parameter(torch.zeros(verts.shape[0], 3))
        self.register_buffer("sdf_anchor", torch.zeros(verts.shape[0]))  # the sdf the stage started from
        self.encoding = HashGridEncoding(n_input_dims=3, n_levels=n_levels, n_features_per_level=n_features_per_level,
                                         log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                                         per_level_scale=per_level_scale, backend=encoding_backend)
        self.mlp = _mlp(self.encoding.n_output_dims, mlp_width, 1, 3)

    def vertices(self) -> torch.Tensor:
        """Deformed grid vertices (V,3) world units."""
        offset = self.deform_fraction * self.cell * torch.tanh(self.deform)
        return self.grid_vertices + offset

    def extract_mesh(self) -> TriMesh:
        """The current surface (marching tetrahedra of sdf on the deformed grid)."""
        verts, faces, edges = marching_tets(self.vertices(), self.sdf, self.tets)
        return TriMesh(verts, faces, edges)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """Albedo (N,3) in [0,1] at world points x (N,3)."""
        u = ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)
        return torch.sigmoid(self.mlp(self.encoding(u.float())))

    def sdf_regularizer(self, grid_edges: torch.Tensor) -> torch.Tensor:
        """nvdiffrec's sign regulariser on the crossed grid edges (M,2): binary cross-entropy pushing each end's
        sdf towards the other end's sign, which removes small floaters and internal sheets."""
        if grid_edges.shape[0] == 0:
            return self.sdf.new_zeros(())
        sa, sb = self.sdf[grid_edges[:, 0]], self.sdf[grid_edges[:, 1]]
        return 0.5 * (F.binary_cross_entropy_with_logits(sa, (sb > 0).float())
                      + F.binary_cross_entropy_with_logits(sb, (sa > 0).float()))

    def anchor_penalty(self, band: float = 2.0) -> torch.Tensor:
        """Sum over the vertices within `band` cells of the starting surface of ((sdf − sdf_anchor) / cell)²:
        keeps the surface near where the stage started (the NeRF's, see `dream3d.stages.nerf_to_dmtet`) unless the
        guidance keeps pushing it (SDS on the mesh otherwise inflates shapes by a steady fraction of a cell)."""
        near = self.sdf_anchor.abs() < band * self.cell
        return (((self.sdf - self.sdf_anchor) / self.cell)[near] ** 2).sum()

    def param_groups(self, lr: float, sdf_lr: float, deform_lr: float, encoding_lr: float) -> list[dict]:
        """Optimizer parameter groups: sdf, deformation, albedo hash grid, albedo MLP."""
        return [{"params": [self.sdf], "lr": sdf_lr}, {"params": [self.deform], "lr": deform_lr},
                {"params": list(self.encoding.parameters()), "lr": encoding_lr},
                {"params": list(self.mlp.parameters()), "lr": lr}]
