"""Export: geometry -> mesh -> UV atlas -> baked albedo texture -> .glb / .obj; turntable videos.

`export_geometry` needs only the geometry interface (`bound`, `density`, `albedo`); it never loads a diffusion
prior. Pipeline and choices (details in each module):

- `surface`: coarse-to-fine density grid, automatic iso level (`level`: the density whose occupancy silhouettes
  best match the volume-rendered opacity > 0.5 silhouettes), marching cubes, floater removal, decimation;
- `uv`: xatlas atlas; `bake`: numpy UV-space rasterizer + albedo queries + seam dilation;
- `writers`: GLB (PBR metallic-roughness, metallic 0, roughness 1) and OBJ/MTL/PNG;
- `video`: turntable MP4 + GIF from a render function.
"""

from __future__ import annotations

import logging
import os
import time

import torch

from dream3d.export.bake import bake_albedo
from dream3d.export.fields import DEFAULT_CHUNK, geometry_device
from dream3d.export.surface import Surface, extract_surface
from dream3d.export.textured import FORMATS, check_export_args, write_textured
from dream3d.export.uv import UVMesh, unwrap
from dream3d.export.video import write_turntable
from dream3d.export.writers import write_glb, write_obj

logger = logging.getLogger("dream3d")

__all__ = ["FORMATS", "export_geometry", "write_turntable", "extract_surface", "Surface", "UVMesh", "unwrap",
           "bake_albedo", "write_glb", "write_obj"]


def export_geometry(geometry, out_dir: str | os.PathLike, formats: tuple[str, ...] | list[str] = FORMATS,
                    resolution: int = 256, texture_size: int = 1024, *, level: float | None = None,
                    coarse_factor: int = 2, max_faces: int = 30000, min_component_fraction: float = 0.05,
                    uv_padding: int = 4, name: str = "model", device: torch.device | str | None = None,
                    chunk: int = DEFAULT_CHUNK) -> dict:
    """Export a geometry's surface as textured meshes into `out_dir` (created if needed).

    geometry: `bound`, `density(x (N,3)) -> (N,)`, `albedo(x (N,3)) -> (N,3) in [0,1]` (queried under no_grad in
    chunks of `chunk` points on `device`, default the geometry's); formats: any of "glb", "obj";
    resolution: marching-cubes cells per axis over [-bound, bound]^3; texture_size: albedo texture side (texels);
    level: density iso level (None = automatic from the rendered silhouettes); coarse_factor, max_faces,
    min_component_fraction: see `dream3d.export.surface.extract_surface`; uv_padding: texels between charts.

    Writes `<name>.glb`, `<name>.obj`, `<name>.mtl`, `<name>_albedo.png` (the last three for "obj") and returns
    {"files": {"glb"|"obj"|"mtl"|"texture": Path}, "stats": {level, silhouette_iou, faces, vertices, watertight,
    volume, components_removed, density_queries, albedo_queries, texture_coverage, time_*_s, time_total_s, ...}}.
    Raises `Dream3DError` (one line) for bad arguments or an empty/degenerate field.
    """
    formats = check_export_args(formats, texture_size)
    device = torch.device(device) if device is not None else geometry_device(geometry)
    t0 = time.perf_counter()
    surface = extract_surface(geometry, resolution, level=level, coarse_factor=coarse_factor,
                              min_component_fraction=min_component_fraction, max_faces=max_faces, device=device,
                              chunk=chunk)
    stats = dict(surface.stats)
    t1 = time.perf_counter()
    files, mesh, write_stats = write_textured(geometry, surface.vertices, surface.faces, surface.normals, out_dir,
                                              formats, texture_size, uv_padding, name, device, chunk)
    stats.update(write_stats, vertices=int(mesh.vertices.shape[0]), faces=int(mesh.faces.shape[0]),
                 vertices_before_uv=int(surface.vertices.shape[0]), resolution=int(resolution),
                 texture_size=int(texture_size), time_surface_s=t1 - t0, time_total_s=time.perf_counter() - t0)
    t4 = time.perf_counter()
    logger.info("exported %s in %.1f s (%d faces, level %.4g)", ", ".join(str(p) for p in files.values()),
                t4 - t0, stats["faces"], stats["level"])
    return {"files": files, "stats": stats}
