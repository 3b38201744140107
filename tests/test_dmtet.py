"""Tet grid, differentiable marching tetrahedra, DMTet geometry, mesh voxelization."""

import math

import torch
import trimesh

from dream3d.geometry.dmtet import DMTetGeometry
from dream3d.geometry.mesh_ops import mesh_occupancy, vertex_normals
from dream3d.geometry.tets import marching_tets, tet_grid
from dream3d.shapes.metrics import volume_iou
from dream3d.shapes.primitives import grid_points


def test_tet_grid_is_conforming_and_positively_oriented():
    r, bound = 5, 1.0
    verts, tets = tet_grid(r, bound)
    assert verts.shape == ((r + 1) ** 3, 3) and tets.shape == (6 * r ** 3, 4)
    p = verts.double()[tets]
    vol = torch.linalg.det(p[:, 1:] - p[:, :1]) / 6
    assert (vol > 0).all()
    assert abs(float(vol.sum()) - (2 * bound) ** 3) < 1e-9
    tris = torch.cat([tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]])
    _, counts = torch.unique(tris.sort(1).values, dim=0, return_counts=True)
    assert counts.max() == 2  # every triangle shared by at most two tets ...
    assert int((counts == 1).sum()) == 6 * 2 * r * r  # ... and the unshared ones tile the box's 6 faces


def _sphere_mesh(res, radius, centre=(0.0, 0.0, 0.0), deform=0.0, dtype=torch.float32):
    verts, tets = tet_grid(res)
    verts = verts.to(dtype)
    if deform:
        gen = torch.Generator().manual_seed(0)
        verts = verts + deform * (2.0 / res) * (torch.rand(verts.shape, generator=gen, dtype=dtype) - 0.5)
    sdf = (verts - torch.tensor(centre, dtype=dtype)).norm(dim=-1) - radius
    return verts, sdf, tets


def test_marching_tets_sphere_is_watertight_outward_with_the_right_volume():
    for res, centre, deform in ((32, (0.0, 0.0, 0.0), 0.0), (40, (0.11, -0.07, 0.05), 0.4)):
        verts, sdf, tets = _sphere_mesh(res, 0.6, centre, deform)
        mv, mf, _ = marching_tets(verts, sdf, tets)
        mesh = trimesh.Trimesh(mv.numpy(), mf.numpy(), process=False)
        assert mesh.is_watertight and mesh.is_winding_consistent
        exact = 4 / 3 * math.pi * 0.6 ** 3
        assert mesh.volume > 0  # outward
        assert abs(mesh.volume - exact) / exact < 0.02
        # normals point away from the centre
        n = vertex_normals(mv, mf)
        assert ((n * (mv - torch.tensor(centre))).sum(-1) > 0).float().mean() > 0.99
        # vertices lie on the sphere up to the linear-interpolation error
        assert ((mv - torch.tensor(centre)).norm(dim=-1) - 0.6).abs().max() < 0.5 * 2.0 / res


def _signed_volume(v, f):
    t = v[f]
    return (t[:, 0] * torch.linalg.cross(t[:, 1], t[:, 2])).sum() / 6


def test_marching_tets_gradients_match_finite_differences():
    """d volume / d sdf and d volume / d vertex positions through the zero-crossing interpolation (float64)."""
    verts, sdf, tets = _sphere_mesh(8, 0.55, (0.03, 0.02, -0.04), dtype=torch.float64)
    s = sdf.clone().requires_grad_(True)
    v = verts.clone().requires_grad_(True)
    mv, mf, edges = marching_tets(v, s, tets)
    _signed_volume(mv, mf).backward()
    ids = torch.unique(edges)[:: max(1, edges.unique().numel() // 12)]  # vertices next to the surface
    assert ids.numel() >= 8
    eps = 1e-6
    for i in ids.tolist():
        fd_s = []
        for sign in (1, -1):
            s2 = sdf.clone()
            s2[i] += sign * eps
            m2, f2, _ = marching_tets(verts, s2, tets)
            fd_s.append(_signed_volume(m2, f2))
        assert abs(float((fd_s[0] - fd_s[1]) / (2 * eps) - s.grad[i])) < 1e-6
        for k in range(3):
            fd = []
            for sign in (1, -1):
                v2 = verts.clone()
                v2[i, k] += sign * eps
                m2, f2, _ = marching_tets(v2, sdf, tets)
                fd.append(_signed_volume(m2, f2))
            assert abs(float((fd[0] - fd[1]) / (2 * eps) - v.grad[i, k])) < 1e-6
    assert s.grad[ids].abs().max() > 1e-3  # the sdf moves the surface


def test_dmtet_geometry_deformation_is_bounded_and_differentiable():
    geo = DMTetGeometry(resolution=16, deform_fraction=0.25, log2_hashmap_size=12, n_levels=4,
                        encoding_backend="torch")
    with torch.no_grad():
        geo.sdf.copy_(geo.grid_vertices.norm(dim=-1) - 0.5)
        geo.deform.normal_(0, 10.0)
    offset = geo.vertices() - geo.grid_vertices
    assert offset.abs().max() <= 0.25 * geo.cell + 1e-6
    mesh = geo.extract_mesh()
    loss = mesh.vertices.norm(dim=-1).mean() + geo.albedo(mesh.vertices).mean() + geo.sdf_regularizer(
        mesh.grid_edges)
    loss.backward()
    assert geo.sdf.grad.abs().sum() > 0 and geo.deform.grad.abs().sum() > 0
    assert geo.encoding.params.grad.abs().sum() > 0
    assert "grid_vertices" not in geo.state_dict() and "sdf" in geo.state_dict()


def test_mesh_occupancy_matches_analytic_shapes():
    pts = grid_points(48)
    ico = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    occ = mesh_occupancy(torch.tensor(ico.vertices), torch.tensor(ico.faces), 48)
    assert volume_iou(occ, pts.norm(dim=-1) < 0.7) > 0.98
    torus = trimesh.creation.torus(major_radius=0.6, minor_radius=0.25, major_sections=64, minor_sections=32)
    occ = mesh_occupancy(torch.tensor(torus.vertices), torch.tensor(torus.faces), 48)
    ring = (pts[..., :2].norm(dim=-1) - 0.6) ** 2 + pts[..., 2] ** 2 < 0.25 ** 2  # trimesh's torus is about z
    assert volume_iou(occ, ring) > 0.95
    assert not occ[24, 24, 24] and occ[24 + 14, 24, 24]  # the hole, the ring


def test_anchor_penalty_counts_the_band_around_the_starting_surface():
    geo = DMTetGeometry(resolution=8, n_levels=2, log2_hashmap_size=10, encoding_backend="torch")
    start = geo.grid_vertices.norm(dim=-1) - 0.5  # a sphere's signed distance
    with torch.no_grad():
        geo.sdf.copy_(start)
        geo.sdf_anchor.copy_(start)
    assert float(geo.anchor_penalty()) == 0.0
    with torch.no_grad():
        geo.sdf.add_(0.1 * geo.cell)  # every vertex moved by a tenth of a cell
    near = int((start.abs() < 2 * geo.cell).sum())
    assert 0 < near < start.numel()
    assert math.isclose(float(geo.anchor_penalty()), near * 0.01, rel_tol=1e-4)
    geo.anchor_penalty().backward()  # d/dsdf = 2 Δ / cell² inside the band, 0 outside
    inside = start.abs() < 2 * geo.cell
    assert torch.allclose(geo.sdf.grad[inside], torch.full((near,), 0.2 / geo.cell), rtol=1e-4)
    assert (geo.sdf.grad[~inside] == 0).all()
    assert "sdf_anchor" in geo.state_dict()  # saved with the checkpoint, so a resumed stage keeps its anchor
