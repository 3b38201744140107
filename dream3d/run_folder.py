"""The run folder: the one place that knows the layout of `outputs/<run>/`.

    config.yaml       the resolved config the run was started with (reloadable with `config.load_config`)
    status.json       state (running | done | stopped | failed), step, steps, prompt, method, seconds, updated
    metrics.jsonl     one JSON line of floats per optimisation step
    checkpoint/       the latest checkpoint (safetensors + meta.json, written atomically; `dream3d.checkpoint`)
    previews/         step_<6-digit step>.png: views around the object during training
    init.json         a mesh stage's record of how it was initialised from its NeRF run
    export/           model.glb, model.obj + .mtl + textures, export.json, model_obj.zip (the app's download),
                      gaussians.ply (a Gaussian-stage run's Gaussians)
    turntable.mp4|gif the exported turntable video
    thumbnail.png     batch: a front view for the gallery; error.log: batch: the traceback of a failed job
    .dream3d-run.json the marker that the folder is a dream3d run (written with the config)
    .lock             held (fcntl) by the one process writing the run: pid, host, command, since when

Every other module asks a `RunFolder` for these paths. A command that writes a run takes its lock
(`RunFolder.locked`): a second process gets one line naming the owner; the kernel drops the lock of a process
that died, and the next one takes it over (saying so). `generate` writes only into a new or empty folder, or
continues an unfinished run of the same prompt and settings (`check_new_run`). A two-stage recipe's mesh stage lives next to its NeRF
run in `<run>-mesh` (`RunFolder.mesh_stage`).

Example:
    >>> run = RunFolder("outputs/a-red-cube-s0-20260101-120000")
    >>> run.checkpoint, run.preview_path(100).name
    (PosixPath('outputs/a-red-cube-s0-20260101-120000/checkpoint'), 'step_000100.png')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from dream3d.checkpoint import find_checkpoint, load_checkpoint, load_module_tensors
from dream3d.config import RunConfig, first_difference, load_config, save_config
from dream3d.errors import Dream3DError, safe_text
from dream3d.export.gaussian_ply import GAUSSIANS_PLY
from dream3d.fileio import slugify, write_json_atomic
from dream3d.lockfile import LockBusy, describe_owner, describe_takeover, held, now_utc
from dream3d.render.protocol import Renderer
from dream3d.stages import build_renderer
from dream3d.system import resolve_device

PREVIEW_GLOB = "step_*.png"
MARKER_FILE = ".dream3d-run.json"
LOCK_FILE = ".lock"
log = logging.getLogger("dream3d")


class RunInUse(Dream3DError):
    """Another process holds the run's lock (the message names it)."""


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
    def gaussians_ply(self) -> Path:
        """A Gaussian-stage run's Gaussians as a 3DGS `.ply` (`dream3d.export.gaussian_ply`)."""
        return self.export / GAUSSIANS_PLY

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
    def marker(self) -> Path:
        return self.path / MARKER_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

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

    def is_marked(self) -> bool:
        """Whether dream3d marked the folder as one of its runs (runs of older versions are not marked)."""
        return self.marker.is_file()

    def has_checkpoint(self) -> bool:
        return find_checkpoint(self.checkpoint) is not None

    def read_config(self) -> RunConfig:
        """The config the run was started with; Dream3DError when the folder is not a run or its config.yaml is
        damaged (the message names the file)."""
        if not self.path.is_dir():
            raise Dream3DError(f"{safe_text(self.path)} is not a dream3d run folder (no such folder)")
        if not self.is_run():
            raise Dream3DError(f"{safe_text(self.path)} is not a dream3d run folder (no config.yaml)")
        return load_config(self.config)

    def write_config(self, cfg: RunConfig) -> None:
        """Create the folder, mark it as a dream3d run and write the resolved config.yaml."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.is_marked():
            write_json_atomic(self.marker, {"dream3d_run": 1, "created": now_utc()})
        save_config(cfg, self.config)

    # --- output checks -----------------------------------------------------------------------------------------
    def check_target(self) -> None:
        """Create the folder, or a Dream3DError when it cannot be a run folder: it or a folder above it is a file,
        or it cannot be created (a read-only or virtual file system)."""
        for p in (self.path, *self.path.parents):
            if p.exists():
                if not p.is_dir():
                    where = "is a file" if p == self.path else f"is under {safe_text(p)}, which is a file"
                    raise Dream3DError(f"--out {safe_text(self.path)} {where}; give a folder")
                break
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".dream3d-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise Dream3DError(f"cannot write the run folder {safe_text(self.path)} "
                               f"({e.strerror or type(e).__name__})") from None

    def check_new_run(self, cfg: RunConfig) -> None:
        """Dream3DError unless `generate` may write `cfg` here: the folder is new or empty, or holds an unfinished
        run of the same prompt and settings (which then continues)."""
        if not self.path.is_dir() or not [p for p in self.path.iterdir() if p.name != LOCK_FILE]:
            return
        where = safe_text(self.path)
        fresh = f"continue it with dream3d generate --resume {where}, or give a fresh --out"
        if not self.is_marked():
            if self._is_old_run():
                raise Dream3DError(f"--out already holds a run of an older dream3d; {fresh}")
            raise Dream3DError(f"--out {where} already holds files that are not a dream3d run; give a fresh --out")
        saved = self.read_config()
        if self.read_status().get("state") == "done":
            raise Dream3DError(f"--out holds a finished run of '{safe_text(saved.prompt, 60)}'; give a fresh --out "
                               f"(or more steps: dream3d generate --resume {where} --steps N)")
        diff = first_difference(saved, cfg)
        if diff:
            key, there, here = diff
            raise Dream3DError(f"--out holds a run with other settings ({key}: {safe_text(repr(there), 40)} there, "
                               f"{safe_text(repr(here), 40)} here); {fresh}")

    def _is_old_run(self) -> bool:
        """Whether an unmarked folder holds a run written by an older dream3d (a loadable config.yaml and a
        status.json with a state)."""
        try:
            self.read_config()
        except Dream3DError:
            return False
        return "state" in self.read_status()

    def check_not_inside(self, source: str | Path, command: str) -> None:
        """Dream3DError when this (output) folder is the source run `source`, or inside it, or holds it."""
        out, src = self.path.resolve(), Path(source).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise Dream3DError(f"dream3d {command} writes a new run: --out {safe_text(self.path)} would overwrite "
                               f"its source run {safe_text(source)}; give another folder")

    # --- one writer --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Hold the run's lock file while `command` writes the run; Dream3DError naming the owner when another
        process holds it (RunInUse). A lock left by a process that is gone is taken over (one warning line). When `command`
        fails before writing anything, the folder it would have filled is removed again."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with held(self.lock_file, {"command": command}) as previous:
                if previous:
                    log.warning("took over the lock of %s left by %s (%s)", safe_text(self.path),
                                describe_owner(previous), describe_takeover(previous))
                try:
                    yield
                except BaseException:
                    self._remove_if_unused()
                    raise
        except LockBusy as busy:
            raise RunInUse(f"{safe_text(self.path)} is in use by {safe_text(busy.owner.get('command', 'dream3d'))} "
                               f"({describe_owner(busy.owner)}); wait for it or stop it") from None

    def _remove_if_unused(self) -> None:
        """Remove the folder when it holds nothing but its lock file (a command that failed before writing)."""
        if self.path.is_dir() and not [p for p in self.path.iterdir() if p.name != LOCK_FILE]:
            self.lock_file.unlink(missing_ok=True)
            self.path.rmdir()

    def read_status(self) -> dict:
        """status.json as a dict ({} when missing or unreadable)."""
        try:
            data = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_status(self, state: str, **fields: Any) -> None:
        """Atomically write status.json: `state`, the given fields and the UTC time."""
        data = {"state": state, **fields, "updated": now_utc()}
        write_json_atomic(self.status, data)

    def load_renderer(self, device: str | None = None) -> tuple[RunConfig, Renderer]:
        """(config, renderer with the run's latest weights, in eval mode); `device` defaults to the run's."""
        cfg = self.read_config()
        if not self.has_checkpoint():
            raise Dream3DError(f"{self.path} has no checkpoint yet; finish (or resume) the run first")
        renderer = build_renderer(cfg)
        tensors, _ = load_checkpoint(self.checkpoint)
        load_module_tensors("renderer", renderer, tensors, source=self.checkpoint)
        return cfg, renderer.to(resolve_device(device or cfg.device)).eval()


def default_run_dir(cfg: RunConfig, root: str | Path = "outputs") -> RunFolder:
    """outputs/<prompt-slug>-s<seed>-<UTC timestamp>, or outputs/<name> when the config names the run."""
    if cfg.name:
        return RunFolder(Path(root) / slugify(cfg.name, 80))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return RunFolder(Path(root) / f"{slugify(cfg.prompt)}-s{cfg.seed}-{stamp}")


def reserve_run_dir(path: str | Path) -> Path:
    """Create and return the new folder `path`, or `path-2`, `path-3`, ... when taken (two runs started in the
    same second never share a folder: the creation is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, i = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1
            candidate = path.with_name(f"{path.name}-{i}")
