"""Procedural tetrahedral grid and differentiable marching tetrahedra.

Grid: the box [-bound, bound]^3 cut into resolution^3 cubes, each split into the 6 tetrahedra of the Kuhn
(Freudenthal) triangulation, t_π = (c, c + e_π0, c + e_π0 + e_π1, c + 1) for the 6 permutations π of the axes.
Every cube uses the same main diagonal, so neighbouring cubes' faces are split the same way and the grid is
conforming (every interior triangle is shared by exactly two tets). All tets are oriented positively
(det[v1 − v0, v2 − v0, v3 − v0] > 0).

Marching tetrahedra: a vertex is inside when sdf < 0. In a tet with 1 or 3 vertices inside the surface is one
triangle, with 2 inside a quad (two triangles), through the zero crossings of the crossed edges,

    p = (v_a · s_b − v_b · s_a) / (s_b − s_a)        (linear interpolation of the sdf along the edge)

which carries gradients to the sdf values and to the (deformed) vertex positions. Crossings are shared by the
tets around an edge (one mesh vertex per crossed grid edge), so the mesh is closed wherever the surface stays
inside the grid. The case table is built here from a reference tet by orienting each triangle's normal away
from the inside vertices; since every grid tet has the reference's orientation, faces come out
counter-clockwise seen from outside (normals towards sdf > 0).
"""

from __future__ import annotations

import itertools

import torch

TET_EDGES = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])


def tet_grid(resolution: int, bound: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices ((R+1)^3, 3) float32 world units (index (ix·(R+1) + iy)·(R+1) + iz) and tets (6·R^3, 4) long."""
    n = resolution + 1
    c = torch.linspace(-bound, bound, n)
    verts = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    local = []
    for perm in itertools.permutations(range(3)):
        p = torch.zeros(3, dtype=torch.long)
        path = [p.clone()]
        for axis in perm:
            p[axis] += 1
            path.append(p.clone())
        pts = torch.stack(path).double()
        if torch.linalg.det(pts[1:] - pts[0]) < 0:
            path[2], path[3] = path[3], path[2]
        local.append(torch.stack(path))
    local = torch.stack(local)  # (6,4,3) corner offsets
    offset = (local[..., 0] * n + local[..., 1]) * n + local[..., 2]  # (6,4)
    i = torch.arange(resolution)
    base = ((i[:, None, None] * n + i[None, :, None]) * n + i[None, None, :]).reshape(-1)
    tets = (base[:, None, None] + offset[None]).reshape(-1, 4)
    return verts, tets


def _case_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles (16,2,3) as local edge indices (−1 unused) and their count (16,) per inside-code
    (bit k set = vertex k inside)."""
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)  # positive
    edge_of = {tuple(e.tolist()): k for k, e in enumerate(TET_EDGES)}
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)

    def edge(a, b):
        return edge_of[(min(a, b), max(a, b))]

    for code in range(16):
        inside = [k for k in range(4) if code >> k & 1]
        outside = [k for k in range(4) if not code >> k & 1]
        if len(inside) in (0, 4):
            continue
        if len(inside) in (1, 3):
            lone, rest = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            tris = [[edge(lone, r) for r in rest]]
        else:
            (a, b), (c, d) = inside, outside
            quad = [edge(a, c), edge(a, d), edge(b, d), edge(b, c)]  # a cycle around the quad
            tris = [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
        centre_in = ref[inside].mean(0)
        for t, tri in enumerate(tris):
            mids = torch.stack([ref[TET_EDGES[e]].mean(0) for e in tri])
            normal = torch.linalg.cross(mids[1] - mids[0], mids[2] - mids[0])
            if float(normal @ (mids.mean(0) - centre_in)) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[code, t] = torch.tensor(tri)
        count[code] = len(tris)
    return table, count


TRIANGLE_TABLE, TRIANGLE_COUNT = _case_table()


def marching_tets(vertices: torch.Tensor, sdf: torch.Tensor, tets: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero level set of a piecewise-linear sdf on a tet mesh.

    vertices (V,3) world units, sdf (V,) (< 0 inside), tets (T,4) long, positively oriented.
    Returns mesh vertices (M,3) (differentiable w.r.t. `vertices` and `sdf`), faces (K,3) long
    (counter-clockwise seen from outside), and the crossed grid edges (M,2) long that each mesh vertex lies on.
    """
    device = vertices.device
    with torch.no_grad():
        inside = sdf < 0
        occ = inside[tets]  # (T,4)
        n_in = occ.sum(1)
        keep = (n_in > 0) & (n_in < 4)
        tv, occ = tets[keep], occ[keep]
        code = (occ.long() * torch.tensor([1, 2, 4, 8], device=device)).sum(1)
        ends = tv[:, TET_EDGES.to(device)]  # (Tv,6,2)
        crossed = occ[:, TET_EDGES[:, 0]] != occ[:, TET_EDGES[:, 1]]  # (Tv,6)
        ends = ends.sort(-1).values
        nv = vertices.shape[0]
        key = ends[..., 0] * nv + ends[..., 1]
        uniq, inv = torch.unique(key[crossed], return_inverse=True)
        edge_idx = torch.full(key.shape, -1, dtype=torch.long, device=device)
        edge_idx[crossed] = inv
        grid_edges = torch.stack([uniq // nv, uniq % nv], -1)
        table, count = TRIANGLE_TABLE.to(device), TRIANGLE_COUNT.to(device)
        tri_local = table[code]  # (Tv,2,3)
        rows = torch.arange(tv.shape[0], device=device)
        faces = [edge_idx[rows[:, None], tri_local[:, 0]]]
        two = count[code] == 2
        faces.append(edge_idx[rows[two][:, None], tri_local[two, 1]])
        faces = torch.cat(faces)
    a, b = grid_edges[:, 0], grid_edges[:, 1]
    sa, sb = sdf[a][:, None], sdf[b][:, None]
    verts = (vertices[a] * sb - vertices[b] * sa) / (sb - sa)
    return verts, faces, grid_edges
