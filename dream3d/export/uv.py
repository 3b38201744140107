"""UV atlas with xatlas: cut the mesh into charts, flatten and pack them into [0,1]^2.

UV convention (the one OBJ and trimesh use): u to the right, **v up**; the texture image's row 0 is v = 1.
glTF puts v down (row 0 at v = 0); the glTF writer stores (u, 1 − v). Vertices on chart seams are duplicated,
so the unwrapped mesh has more vertices than the input; `source_vertex` maps them back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from dream3d.errors import Dream3DError

logger = logging.getLogger("dream3d")


@dataclass
class UVMesh:
    """A triangle mesh with one UV per vertex.

    vertices: (V,3) float32 world units; faces: (F,3) int64 (counter-clockwise seen from outside);
    normals: (V,3) float32 unit; uvs: (V,2) float32 in [0,1], v up; source_vertex: (V,) int64 index of each
    vertex in the mesh that was unwrapped.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray
    source_vertex: np.ndarray


def unwrap(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, texture_size: int = 1024,
           padding: int = 4) -> UVMesh:
    """UV-unwrap a mesh with xatlas, packing the charts for a `texture_size`² texture with `padding` texels
    between charts (room for bilinear filtering and seam dilation).

    vertices (V,3), faces (F,3), normals (V,3) -> `UVMesh` (seam vertices duplicated, attributes carried over).
    """
    import xatlas  # only needed when exporting

    if faces.shape[0] == 0:
        raise Dream3DError("cannot export: the mesh to unwrap has no faces")
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32),
                   np.ascontiguousarray(normals, dtype=np.float32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmap, new_faces, uvs = atlas[0]
    vmap = np.asarray(vmap, dtype=np.int64)
    logger.info("uv atlas: %d charts, %d -> %d vertices, utilization %.2f", atlas.chart_count,
                vertices.shape[0], vmap.shape[0], atlas.utilization)
    return UVMesh(vertices=np.ascontiguousarray(vertices[vmap], dtype=np.float32),
                  faces=np.asarray(new_faces, dtype=np.int64),
                  normals=np.ascontiguousarray(normals[vmap], dtype=np.float32),
                  uvs=np.clip(np.asarray(uvs, dtype=np.float32), 0.0, 1.0), source_vertex=vmap)
