"""Run folders as the app sees them: listing past runs, their result files, unique new folders.

No gradio here; the UI turns `RunInfo` into components.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dream3d.errors import Dream3DError

OBJ_ZIP = "model_obj.zip"


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
    preview: Path | None  # latest previews/step_*.png
    glb: Path | None
    obj_zip: Path | None  # export/model_obj.zip (OBJ + MTL + texture), made on demand
    config: Path | None
    video: Path | None  # turntable.mp4
    mtime: float

    @property
    def thumbnail(self) -> Path | None:
        """The gallery image: the turntable GIF (one view at a time) or else the latest preview strip."""
        gif = self.path / "turntable.gif"
        return gif if gif.is_file() else self.preview

    @property
    def caption(self) -> str:
        """'a red cube · sds · done 1200/1200' (gallery caption)."""
        return f"{self.prompt} · {self.method} · {self.state} {self.step}/{self.steps}"

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint" / "meta.json").is_file()


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def latest_preview(run_dir: Path) -> Path | None:
    """The newest previews/step_*.png (names sort by step), or None."""
    files = sorted((run_dir / "previews").glob("step_*.png"))
    return files[-1] if files else None


def obj_zip(run_dir: Path) -> Path | None:
    """export/model_obj.zip holding model.obj, its .mtl and textures (rebuilt when the OBJ is newer)."""
    export = run_dir / "export"
    obj = export / "model.obj"
    if not obj.is_file():
        return None
    out = export / OBJ_ZIP
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
    """(step, loss) from metrics.jsonl, one per step (the last one where a resumed run repeated steps)."""
    losses: dict[int, float] = {}
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
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
    """RunInfo of a run folder (status.json, previews/, export/); the OBJ zip is made if missing."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    export = run_dir / "export"
    return RunInfo(name=run_dir.name, path=run_dir, state=str(status.get("state", "unknown")),
                   step=int(status.get("step", 0)), steps=int(status.get("steps", 0)),
                   prompt=str(status.get("prompt", "")), method=str(status.get("method", "")),
                   preview=latest_preview(run_dir), glb=_existing(export / "model.glb"), obj_zip=obj_zip(run_dir),
                   config=_existing(run_dir / "config.yaml"), video=_existing(run_dir / "turntable.mp4"),
                   mtime=(run_dir / "status.json").stat().st_mtime if (run_dir / "status.json").exists() else 0.0)


def list_runs(root: Path) -> list[RunInfo]:
    """Run folders directly under `root` (those with config.yaml and status.json), newest first."""
    if not root.is_dir():
        return []
    runs = [read_run(d) for d in root.iterdir()
            if d.is_dir() and (d / "config.yaml").is_file() and (d / "status.json").is_file()]
    return sorted(runs, key=lambda r: r.mtime, reverse=True)


def resolve_run(root: Path, name: str) -> Path:
    """The run folder `root/name`; a user-supplied name must be a plain folder name of an existing run."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise Dream3DError(f"unknown run {name!r}")
    path = root / name
    if not (path / "config.yaml").is_file():
        raise Dream3DError(f"unknown run {name!r} (no such run folder in {root})")
    return path


def reserve_run_dir(path: Path) -> Path:
    """Create and return `path`, or `path-2`, `path-3`, ... when taken (two runs started in the same second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, i = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1
            candidate = path.with_name(f"{path.name}-{i}")
