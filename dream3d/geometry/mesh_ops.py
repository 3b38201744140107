"""Small triangle-mesh operations in torch: vertex normals, inside/outside voxelization, normal consistency."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dream3d.geometry.triangles import covered_pixels


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised face normals (F,3) (length = 2·area; counter-clockwise faces point outward)."""
    tri = vertices[faces]
    return torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (V,3): sum of the adjacent faces' area-weighted normals; differentiable."""
    fn = face_normals(vertices, faces)
    vn = torch.zeros_like(vertices)
    for k in range(3):
        vn = vn.index_add(0, faces[:, k], fn)
    return F.normalize(vn, dim=-1, eps=1e-20)


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor, edge_faces: torch.Tensor) -> torch.Tensor:
    """Mean 1 − cos between the unit normals of faces sharing an edge (edge_faces (E,2), −1 = boundary)."""
    n = F.normalize(face_normals(vertices, faces), dim=-1, eps=1e-20)
    both = (edge_faces >= 0).all(1)
    ef = edge_faces[both]
    if ef.shape[0] == 0:
        return vertices.new_zeros(())
    return (1.0 - (n[ef[:, 0]] * n[ef[:, 1]]).sum(-1)).mean()


@torch.no_grad()
def mesh_occupancy(vertices: torch.Tensor, faces: torch.Tensor, resolution: int, bound: float = 1.0,
                   max_pairs: int = 1 << 21) -> torch.Tensor:
    """Inside/outside (R,R,R) bool, indexed [x, y, z], at the cell centres of a resolution^3 grid over the box
    (`dream3d.shapes.primitives.grid_points`), by ray parity along +z.

    Each column's ray crosses the mesh where the faces' xy projections cover it; a centre is inside when an odd
    number of crossings lies below it. The rays are shifted by a tiny irrational fraction of a cell so that they
    never hit an edge or a vertex exactly. Needs a closed mesh (any winding).
    """
    cell = 2.0 * bound / resolution
    v = vertices.detach().double().cpu()
    f = faces.cpu()
    g = (v[:, :2] + bound) / cell - torch.tensor([1.3e-7 * 2 ** 0.5, 0.7e-7 * 3 ** 0.5], dtype=torch.float64)
    tri = g[f]  # column (i, j) centre sits at (i + ½, j + ½) in these coordinates
    zc = (torch.arange(resolution, dtype=torch.float64) + 0.5) * cell - bound
    hist = torch.zeros(resolution * resolution * (resolution + 1), dtype=torch.long)
    for fr, px, py, b in covered_pixels(tri, torch.ones(f.shape[0], dtype=torch.bool), resolution, resolution,
                                        max_pairs):
        z = (b * v[f[fr], 2]).sum(1)
        k = torch.searchsorted(zc, z)  # first centre at or above the crossing
        hist.index_add_(0, (px * resolution + py) * (resolution + 1) + k, torch.ones_like(k))
    counts = hist.reshape(resolution, resolution, resolution + 1)[..., :resolution].cumsum(2)
    return counts % 2 == 1
