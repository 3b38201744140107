"""Export a run folder: textured meshes (GLB/OBJ, by the run's stage) and the turntable video; no prior loaded."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dream3d.config import RunConfig
from dream3d.errors import Dream3DError, one_line, os_error_text, safe_text
from dream3d.events import Event, EventCallback, ignore_events
from dream3d.fileio import write_bytes_atomic
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

    Every file is written through a temporary sibling and a rename, so a failure (a full disk) leaves no partial
    or temporary file; the run's status.json then says "failed" (not "done") until an export succeeds, and a
    file-system failure is a one-line Dream3DError that says how to redo the export.
    """
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    cfg, renderer = loaded if loaded is not None else run.load_renderer()
    try:
        result = _export(run, cfg, renderer, formats, resolution, texture_size, turntable, log, events)
    except BaseException as e:
        _mark_export(run, failed=f"export failed: {one_line(e)}")
        if isinstance(e, OSError):
            hint = "free space, then" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "then"
            name = os.path.relpath(e.filename, run.path) if e.filename else "the export"
            raise Dream3DError(f"cannot write {safe_text(name)} ({os_error_text(e)}); the export is not done: {hint} "
                               f"redo it with: dream3d export {safe_text(run.path)}") from None
        raise
    _mark_export(run, failed="")
    return result


def _mark_export(run: RunFolder, failed: str) -> None:
    """Record in status.json that the export of a finished run failed (`failed`: why), or succeeded again."""
    status = run.read_status()
    fields = {k: v for k, v in status.items() if k not in ("state", "updated", "error", "export_failed")}
    try:
        if failed and status.get("state") == "done":
            run.write_status("failed", **fields, error=failed, export_failed=True)
        elif not failed and status.get("export_failed"):
            run.write_status("done", **fields)
    except OSError:  # the disk is still full: status.json keeps what it said
        pass


def _export(run: RunFolder, cfg: RunConfig, renderer: Renderer, formats: list[str] | None, resolution: int | None,
            texture_size: int | None, turntable: bool | None, log: Callable[[str], None],
            events: EventCallback) -> dict:
    from dream3d.export import write_turntable
    from dream3d.export.fields import geometry_device

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
    write_bytes_atomic(run.export_record, json.dumps(summary, indent=1, default=str).encode("utf-8"))
    return result
