"""The run folder: the one place that knows the layout of `outputs/<run>/`.

    config.yaml       the resolved config the run was started with (reloadable with `config.load_config`)
    status.json       state (running | done | stopped | failed), step, steps, prompt, method, seconds, updated
    metrics.jsonl     one JSON line of floats per optimisation step
    checkpoint/       the latest checkpoint (safetensors + meta.json, written atomically; `dream3d.checkpoint`)
    previews/         step_<6-digit step>.png: views around the object during training
    init.json         a mesh stage's record of how it was initialised from its NeRF run
    export/           model.glb, model.obj + .mtl + textures, export.json, model_obj.zip (the app's download)
    turntable.mp4|gif the exported turntable video
    thumbnail.png     batch: a front view for the gallery; error.log: batch: the traceback of a failed job

Every other module asks a `RunFolder` for these paths. A two-stage recipe's mesh stage lives next to its NeRF
run in `<run>-mesh` (`RunFolder.mesh_stage`).

Example:
    >>> run = RunFolder("outputs/a-red-cube-s0-20260101-120000")
    >>> run.checkpoint, run.preview_path(100).name
    (PosixPath('outputs/a-red-cube-s0-20260101-120000/checkpoint'), 'step_000100.png')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dream3d.checkpoint import find_checkpoint, load_checkpoint, load_module_tensors
from dream3d.config import RunConfig, load_config
from dream3d.errors import Dream3DError
from dream3d.fileio import slugify, write_json_atomic
from dream3d.render.protocol import Renderer
from dream3d.stages import build_renderer
from dream3d.system import resolve_device

PREVIEW_GLOB = "step_*.png"


@dataclass(frozen=True)
class RunFolder:
    """Named paths and small helpers of one run folder (it need not exist yet)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __str__(self) -> str:
        return str(self.path)

    # --- files -------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def previews(self) -> Path:
        return self.path / "previews"

    @property
    def init_record(self) -> Path:
        return self.path / "init.json"

    @property
    def export(self) -> Path:
        return self.path / "export"

    @property
    def export_record(self) -> Path:
        return self.export / "export.json"

    @property
    def glb(self) -> Path:
        return self.export / "model.glb"

    @property
    def obj(self) -> Path:
        return self.export / "model.obj"

    @property
    def obj_zip(self) -> Path:
        return self.export / "model_obj.zip"

    @property
    def turntable(self) -> Path:
        return self.path / "turntable.mp4"

    @property
    def turntable_gif(self) -> Path:
        return self.path / "turntable.gif"

    @property
    def thumbnail(self) -> Path:
        return self.path / "thumbnail.png"

    @property
    def error_log(self) -> Path:
        return self.path / "error.log"

    @property
    def mesh_stage(self) -> RunFolder:
        """The folder of this NeRF run's mesh stage (two-stage recipes, `dream3d refine`): `<run>-mesh`."""
        return RunFolder(self.path.with_name(self.path.name + "-mesh"))

    def preview_path(self, step: int) -> Path:
        return self.previews / f"step_{step:06d}.png"

    def latest_preview(self) -> Path | None:
        """The newest preview (names sort by step), or None."""
        files = sorted(self.previews.glob(PREVIEW_GLOB))
        return files[-1] if files else None

    # --- state -------------------------------------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds a run (its config.yaml)."""
        return self.config.is_file()

    def has_checkpoint(self) -> bool:
        return find_checkpoint(self.checkpoint) is not None

    def read_config(self) -> RunConfig:
        """The config the run was started with; Dream3DError when the folder is not a run."""
        if not self.is_run():
            raise Dream3DError(f"{self.path} is not a dream3d run folder (no config.yaml)")
        return load_config(self.config)

    def read_status(self) -> dict:
        """status.json as a dict ({} when missing or unreadable)."""
        try:
            data = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_status(self, state: str, **fields: Any) -> None:
        """Atomically write status.json: `state`, the given fields and the UTC time."""
        data = {"state": state, **fields, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json_atomic(self.status, data)

    def load_renderer(self, device: str | None = None) -> tuple[RunConfig, Renderer]:
        """(config, renderer with the run's latest weights, in eval mode); `device` defaults to the run's."""
        cfg = self.read_config()
        if not self.has_checkpoint():
            raise Dream3DError(f"{self.path} has no checkpoint yet; finish (or resume) the run first")
        renderer = build_renderer(cfg)
        tensors, _ = load_checkpoint(self.checkpoint)
        load_module_tensors("renderer", renderer, tensors)
        return cfg, renderer.to(resolve_device(device or cfg.device)).eval()


def default_run_dir(cfg: RunConfig, root: str | Path = "outputs") -> RunFolder:
    """outputs/<prompt-slug>-s<seed>-<UTC timestamp>, or outputs/<name> when the config names the run."""
    if cfg.name:
        return RunFolder(Path(root) / slugify(cfg.name, 80))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return RunFolder(Path(root) / f"{slugify(cfg.prompt)}-s{cfg.seed}-{stamp}")
