"""The tail every export shares: check the arguments, UV-unwrap a surface, bake its albedo, write GLB/OBJ."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dream3d.errors import Dream3DError
from dream3d.export.bake import bake_albedo
from dream3d.export.uv import UVMesh, unwrap
from dream3d.export.writers import write_glb, write_obj

FORMATS = ("glb", "obj")


def check_export_args(formats, texture_size: int) -> tuple[str, ...]:
    """Normalized, de-duplicated formats; one-line `Dream3DError` for an unknown format or a bad texture size."""
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise Dream3DError(f"unknown export format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    if texture_size < 16 or texture_size > 8192:
        raise Dream3DError(f"texture size must be between 16 and 8192 texels, got {texture_size}")
    return formats


def write_textured(geometry, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                   out_dir: str | os.PathLike, formats: tuple[str, ...], texture_size: int, uv_padding: int,
                   name: str, device: torch.device, chunk: int, bake_mode: str = "rendered",
                   refine: Callable[[UVMesh, np.ndarray], tuple[np.ndarray, dict]] | None = None
                   ) -> tuple[dict[str, Path], UVMesh, dict]:
    """Unwrap (vertices (V,3), faces (F,3), normals (V,3)), bake the geometry's albedo (`bake_albedo` mode), write
    `<name>.glb` / `<name>.obj` (+ .mtl, texture). refine: (uv mesh, texture (T,T,3) uint8) -> (texture, stats),
    applied to the baked texture before writing. Returns (files, uv mesh, stats incl. time_uv_s/bake_s/write_s)."""
    t0 = time.perf_counter()
    mesh = unwrap(vertices, faces, normals, texture_size, uv_padding)
    t1 = time.perf_counter()
    texture, stats = bake_albedo(geometry, mesh, texture_size, device, chunk, mode=bake_mode)
    if refine is not None:
        texture, refine_stats = refine(mesh, texture)
        stats.update(refine_stats)
    t2 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if "glb" in formats:
        files["glb"] = write_glb(out / f"{name}.glb", mesh, texture, name)
    if "obj" in formats:
        files.update(write_obj(out / f"{name}.obj", mesh, texture))
    t3 = time.perf_counter()
    return files, mesh, {**stats, "time_uv_s": t1 - t0, "time_bake_s": t2 - t1, "time_write_s": t3 - t2}
