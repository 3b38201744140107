"""Export a run folder: mesh (GLB/OBJ with baked albedo) and turntable video, without loading the prior."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from dream3d.checkpoint import find_checkpoint, load_checkpoint, load_module_tensors
from dream3d.errors import Dream3DError
from dream3d.system import build_renderer, resolve_device


def load_run_renderer(run_dir: str | Path, device: str | None = None):
    """(config, renderer with the run's latest weights, in eval mode) for a run folder."""
    from dream3d.trainer import resume_config

    run_dir = Path(run_dir)
    cfg = resume_config(run_dir)
    if find_checkpoint(run_dir / "checkpoint") is None:
        raise Dream3DError(f"{run_dir} has no checkpoint yet; nothing to export")
    dev = resolve_device(device or cfg.device)
    renderer = build_renderer(cfg)
    tensors, _ = load_checkpoint(run_dir / "checkpoint")
    load_module_tensors("renderer", renderer, tensors)
    return cfg, renderer.to(dev).eval()


def export_run(run_dir: str | Path, formats: list[str] | None = None, resolution: int | None = None,
               texture_size: int | None = None, turntable: bool | None = None, trainer=None,
               log: Callable[[str], None] = lambda m: None) -> dict:
    """Write `export/model.glb|obj` (+ .mtl, texture) and `turntable.mp4|gif` into the run folder.

    Settings default to the run's `export` config. `trainer`: reuse an in-memory renderer (end of `generate`).
    Returns {"files": {...}, "stats": {...}}, also saved as export/export.json.
    """
    from dream3d.export import export_geometry, write_turntable
    from dream3d.export.fields import geometry_device

    run_dir = Path(run_dir)
    if trainer is not None:
        cfg, renderer = trainer.cfg, trainer.renderer.eval()
    else:
        cfg, renderer = load_run_renderer(run_dir)
    e = cfg.export
    formats = formats or list(e.formats)
    t0 = time.time()
    with torch.no_grad():
        if cfg.stage == "mesh":  # the optimized mesh itself, no marching cubes
            from dream3d.export.mesh_export import export_mesh_geometry
            result = export_mesh_geometry(renderer.geometry, run_dir / "export", formats=formats,
                                          texture_size=texture_size or e.texture_size)
        else:
            result = export_geometry(renderer.geometry, run_dir / "export", formats=formats,
                                     resolution=resolution or e.resolution,
                                     texture_size=texture_size or e.texture_size)
    log(f"exported {', '.join(p.name for p in result['files'].values())} in {time.time() - t0:.1f} s "
        f"({result['stats']['faces']} faces)")
    if e.turntable if turntable is None else turntable:
        t1 = time.time()
        size = e.turntable_resolution

        def render_fn(cams):
            return renderer.render_chunked(cams.to(geometry_device(renderer.geometry)), size, size,
                                           shading="lambertian")["rgb"]

        videos = write_turntable(render_fn, run_dir / "turntable.mp4", run_dir / "turntable.gif",
                                 n_frames=e.turntable_frames)
        result["files"].update({f"turntable_{k}": v for k, v in videos.items()})
        result["stats"]["time_turntable_s"] = time.time() - t1
        log(f"wrote turntable.mp4 and turntable.gif in {time.time() - t1:.1f} s")
    summary = {"files": {k: str(v) for k, v in result["files"].items()},
               "stats": {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                         for k, v in result["stats"].items()}}
    (run_dir / "export").mkdir(parents=True, exist_ok=True)
    (run_dir / "export" / "export.json").write_text(json.dumps(summary, indent=1, default=str))
    return result
