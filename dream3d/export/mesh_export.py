"""Export a mesh-stage (DMTet) geometry: the optimized mesh itself, UV-unwrapped, with its albedo field baked.

No density and no marching cubes: the surface is exactly the marching-tetrahedra mesh the rasterizer rendered.
Floaters below `min_component_fraction` of the largest component's area are dropped, and meshes above
`max_faces` are decimated (xatlas' time grows quickly with the face count), as in the NeRF export.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from dream3d.errors import Dream3DError
from dream3d.export.bake import bake_albedo
from dream3d.export.fields import DEFAULT_CHUNK, geometry_device
from dream3d.export.surface import decimate, is_closed, remove_small_components, signed_volume, vertex_normals
from dream3d.export.uv import unwrap
from dream3d.export.writers import write_glb, write_obj


def export_mesh_geometry(geometry, out_dir: str | os.PathLike, formats=("glb", "obj"), texture_size: int = 1024,
                         *, max_faces: int = 30000, min_component_fraction: float = 0.05, uv_padding: int = 4,
                         name: str = "model", chunk: int = DEFAULT_CHUNK) -> dict:
    """Write the geometry's mesh (`extract_mesh()`) with its albedo (`albedo(x)`) baked into a texture.

    Same files and return value as `dream3d.export.export_geometry` ({"files": ..., "stats": ...}).
    """
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    if not formats or any(f not in ("glb", "obj") for f in formats):
        raise Dream3DError(f"unknown export format in {', '.join(formats) or '(none)'}; choose from glb, obj")
    if texture_size < 16 or texture_size > 8192:
        raise Dream3DError(f"texture size must be between 16 and 8192 texels, got {texture_size}")
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
    uv_mesh = unwrap(verts, faces, normals, texture_size, uv_padding)
    t2 = time.perf_counter()
    texture, bake_stats = bake_albedo(geometry, uv_mesh, texture_size, device, chunk, mode="surface")
    t3 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if "glb" in formats:
        files["glb"] = write_glb(out / f"{name}.glb", uv_mesh, texture, name)
    if "obj" in formats:
        files.update(write_obj(out / f"{name}.obj", uv_mesh, texture))
    t4 = time.perf_counter()
    stats.update(bake_stats, components_kept=kept, components_removed=removed, faces=int(uv_mesh.faces.shape[0]),
                 vertices=int(uv_mesh.vertices.shape[0]), watertight=is_closed(faces),
                 volume=signed_volume(verts, faces), texture_size=int(texture_size), time_surface_s=t1 - t0,
                 time_uv_s=t2 - t1, time_bake_s=t3 - t2, time_write_s=t4 - t3, time_total_s=t4 - t0)
    return {"files": files, "stats": stats}
