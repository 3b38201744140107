"""Run folders as the app sees them: listing past runs, their result files, unique new folders.

No gradio here; the UI turns `RunInfo` into components.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dream3d.errors import Dream3DError
from dream3d.run_folder import RunFolder, reserve_run_dir  # noqa: F401


@dataclass
class RunInfo:
    """One run folder: what the gallery shows and what a reopened run offers for download."""

    name: str  # folder name (a direct child of the outputs root)
    path: Path
    state: str  # running | done | stopped | failed | unknown
    step: int
    steps: int
    prompt: str
    method: str
    preview: Path | None  # the latest preview
    glb: Path | None
    obj_zip: Path | None  # OBJ + MTL + texture in one zip, made on demand
    config: Path | None
    video: Path | None  # the turntable MP4
    mtime: float

    @property
    def thumbnail(self) -> Path | None:
        """The gallery image: the turntable GIF (one view at a time) or else the latest preview strip."""
        gif = RunFolder(self.path).turntable_gif
        return gif if gif.is_file() else self.preview

    @property
    def caption(self) -> str:
        """'a red cube · sds · done 1200/1200' (gallery caption)."""
        return f"{self.prompt} · {self.method} · {self.state} {self.step}/{self.steps}"

    @property
    def has_checkpoint(self) -> bool:
        return RunFolder(self.path).has_checkpoint()


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def obj_zip(run_dir: Path) -> Path | None:
    """The run's OBJ zip holding model.obj, its .mtl and textures (rebuilt when the OBJ is newer)."""
    run = RunFolder(run_dir)
    export, obj, out = run.export, run.obj, run.obj_zip
    if not obj.is_file():
        return None
    if out.is_file() and out.stat().st_mtime >= obj.stat().st_mtime:
        return out
    parts = [obj] + sorted(export.glob("model*.mtl")) + sorted(export.glob("model*.png"))
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in parts:
            z.write(p, arcname=p.name)
    tmp.replace(out)
    return out


def read_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) from the run's metrics log, one per step (the last one where a resumed run repeated steps)."""
    losses: dict[int, float] = {}
    try:
        lines = RunFolder(run_dir).metrics.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
            losses[int(row["step"])] = float(row["loss"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return sorted(losses.items())


def read_run(run_dir: Path) -> RunInfo:
    """RunInfo of a run folder (its status, previews and export); the OBJ zip is made if missing."""
    run = RunFolder(run_dir)
    status = run.read_status()
    return RunInfo(name=run.name, path=run.path, state=str(status.get("state", "unknown")),
                   step=int(status.get("step", 0)), steps=int(status.get("steps", 0)),
                   prompt=str(status.get("prompt", "")), method=str(status.get("method", "")),
                   preview=run.latest_preview(), glb=_existing(run.glb), obj_zip=obj_zip(run.path),
                   config=_existing(run.config), video=_existing(run.turntable),
                   mtime=run.status.stat().st_mtime if run.status.exists() else 0.0)


def list_runs(root: Path) -> list[RunInfo]:
    """Run folders directly under `root` (those with a config and a status), newest first."""
    if not root.is_dir():
        return []
    runs = [read_run(d) for d in root.iterdir()
            if d.is_dir() and RunFolder(d).is_run() and RunFolder(d).status.is_file()]
    return sorted(runs, key=lambda r: r.mtime, reverse=True)


def resolve_run(root: Path, name: str) -> Path:
    """The run folder `root/name`; a user-supplied name must be a plain folder name of an existing run."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise Dream3DError(f"unknown run {name!r}")
    path = root / name
    if not RunFolder(path).is_run():
        raise Dream3DError(f"unknown run {name!r} (no such run folder in {root})")
    return path
