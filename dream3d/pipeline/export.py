"""Export a run folder: textured meshes (GLB/OBJ, by the run's stage) and the turntable video; no prior loaded."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from dream3d.config import RunConfig
from dream3d.events import Event, EventCallback, ignore_events
from dream3d.render.protocol import Renderer
from dream3d.run_folder import RunFolder
from dream3d.stages import get_stage


def export_run(run: RunFolder | str | Path, formats: list[str] | None = None, resolution: int | None = None,
               texture_size: int | None = None, turntable: bool | None = None,
               loaded: tuple[RunConfig, Renderer] | None = None, log: Callable[[str], None] = lambda m: None,
               events: EventCallback = ignore_events) -> dict:
    """Write the run's export/ (model.glb | model.obj + .mtl + texture, export.json) and turntable.mp4|gif.

    Settings default to the run's `export` config. loaded: the (config, renderer) already in memory (the end of
    a generation), else they are loaded from the run folder. events: receives a "phase" event ("turntable")
    before the turntable is rendered. Returns {"files": {...}, "stats": {...}} (files as paths); export/export.json
    holds the same with the file paths relative to the run folder.
    """
    from dream3d.export import write_turntable
    from dream3d.export.fields import geometry_device

    run = run if isinstance(run, RunFolder) else RunFolder(run)
    cfg, renderer = loaded if loaded is not None else run.load_renderer()
    renderer.eval()
    e = cfg.export
    t0 = time.time()
    with torch.no_grad():
        result = get_stage(cfg.stage).export(renderer, run.export, list(formats or e.formats),
                                             resolution or e.resolution, texture_size or e.texture_size, cfg=cfg)
    log(f"exported {', '.join(p.name for p in result['files'].values())} in {time.time() - t0:.1f} s "
        f"({result['stats']['faces']} faces)")
    if e.turntable if turntable is None else turntable:
        t1 = time.time()
        size = e.turntable_resolution
        events(Event("phase", cfg.steps, cfg.steps, run.path, stage=cfg.stage, phase="turntable"))

        def render_fn(cams):
            return renderer.render_chunked(cams.to(geometry_device(renderer.geometry)), size, size,
                                           shading="lambertian").rgb

        videos = write_turntable(render_fn, run.turntable, run.turntable_gif, n_frames=e.turntable_frames,
                                 fps=e.turntable_fps)
        result["files"].update({f"turntable_{k}": v for k, v in videos.items()})
        result["stats"]["time_turntable_s"] = time.time() - t1
        log(f"wrote {run.turntable.name} and {run.turntable_gif.name} in {time.time() - t1:.1f} s")
    summary = {"files": {k: os.path.relpath(Path(v).resolve(), run.path.resolve()) for k, v in result["files"].items()},
               "stats": {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                         for k, v in result["stats"].items()}}
    run.export.mkdir(parents=True, exist_ok=True)
    run.export_record.write_text(json.dumps(summary, indent=1, default=str))
    return result
