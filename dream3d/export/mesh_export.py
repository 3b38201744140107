"""Export a mesh-stage (DMTet) geometry: the optimized mesh itself, UV-unwrapped, with its albedo field baked.

No density and no marching cubes: the surface is exactly the marching-tetrahedra mesh the rasterizer rendered.
Floaters below `min_component_fraction` of the largest component's area are dropped, and meshes above
`max_faces` are decimated (xatlas' time grows quickly with the face count), as in the NeRF export.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from dream3d.errors import Dream3DError
from dream3d.export.fields import DEFAULT_CHUNK, geometry_device
from dream3d.export.surface import decimate, is_closed, remove_small_components, signed_volume, vertex_normals
from dream3d.export.textured import check_export_args, write_textured


def export_mesh_geometry(geometry, out_dir: str | os.PathLike, formats=("glb", "obj"), texture_size: int = 1024,
                         *, max_faces: int = 30000, min_component_fraction: float = 0.05, uv_padding: int = 4,
                         name: str = "model", chunk: int = DEFAULT_CHUNK) -> dict:
    """Write the geometry's mesh (`extract_mesh()`) with its albedo (`albedo(x)`) baked into a texture.

    Same files and return value as `dream3d.export.export_geometry` ({"files": ..., "stats": ...}).
    """
    formats = check_export_args(formats, texture_size)
    device = geometry_device(geometry)
    t0 = time.perf_counter()
    with torch.no_grad():
        mesh = geometry.extract_mesh()
    verts = mesh.vertices.detach().cpu().numpy().astype(np.float32)
    faces = mesh.faces.cpu().numpy().astype(np.int64)
    if faces.shape[0] < 4:
        raise Dream3DError("cannot export: the mesh has no surface")
    stats: dict = {"faces_dmtet": int(faces.shape[0])}
    verts, faces, kept, removed = remove_small_components(verts, faces, min_component_fraction)
    verts, faces = decimate(verts, faces, max_faces)
    normals = vertex_normals(verts, faces)
    t1 = time.perf_counter()
    files, uv_mesh, write_stats = write_textured(geometry, verts, faces, normals, out_dir, formats, texture_size,
                                                 uv_padding, name, device, chunk, bake_mode="surface")
    stats.update(write_stats, components_kept=kept, components_removed=removed, faces=int(uv_mesh.faces.shape[0]),
                 vertices=int(uv_mesh.vertices.shape[0]), watertight=is_closed(faces),
                 volume=signed_volume(verts, faces), texture_size=int(texture_size), time_surface_s=t1 - t0,
                 time_total_s=time.perf_counter() - t0)
    return {"files": files, "stats": stats}
