"""Run folders as the app sees them: listing past runs, their result files, unique new folders.

No gradio here; the UI turns `RunInfo` into components.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dream3d.errors import Dream3DError, safe_text
from dream3d.fileio import atomic_target
from dream3d.run_folder import RunFolder, reserve_run_dir  # noqa: F401

log = logging.getLogger("dream3d.app")
UNREADABLE = "unreadable"  # the state of a run folder whose files cannot be read as a run
CAPTION_TEXT = 80  # characters of a prompt or method shown in a caption


@dataclass
class RunInfo:
    """One run folder: what the gallery shows and what a reopened run offers for download."""

    name: str  # the folder's path relative to the outputs root, with "/" (e.g. batch-prompts/a-red-cube-s0-1a2b)
    path: Path
    state: str  # running | done | stopped | failed | unknown | unreadable
    kind: str  # generate | mesh | edit (KINDS)
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
    problem: str = ""  # why the folder is unreadable (one line), "" for a readable run

    @classmethod
    def unreadable(cls, path: Path, name: str, problem: str) -> RunInfo:
        """A run folder shown by name only: its status, config or export cannot be read."""
        return cls(name=name, path=path, state=UNREADABLE, kind="generate", step=0, steps=0, prompt="", method="",
                   preview=None, glb=None, obj_zip=None, config=None, video=None, mtime=_mtime(path),
                   problem=problem)

    @property
    def thumbnail(self) -> Path | None:
        """The gallery image: the turntable GIF (one view at a time) or else the latest preview strip."""
        if self.state == UNREADABLE:
            return None
        gif = RunFolder(self.path).turntable_gif
        return gif if gif.is_file() else self.preview

    @property
    def caption(self) -> str:
        """'generate · a red cube · sds · done 1200/1200' (gallery caption: kind, prompt, method, stage), or
        'unreadable · WHY' for a damaged folder."""
        if self.state == UNREADABLE:
            return f"{UNREADABLE} · {self.problem}"
        return (f"{self.kind} · {safe_text(self.prompt, CAPTION_TEXT)} · {safe_text(self.method, CAPTION_TEXT)} · "
                f"{safe_text(self.state, CAPTION_TEXT)} {self.step}/{self.steps}")

    @property
    def has_checkpoint(self) -> bool:
        try:
            return self.state != UNREADABLE and RunFolder(self.path).has_checkpoint()
        except Exception:  # noqa: BLE001 - a damaged checkpoint folder: the run is not editable
            return False


def _mtime(path: Path) -> float:
    try:
        return RunFolder(path).status.stat().st_mtime
    except OSError:
        return 0.0


def _count(status: dict, key: str) -> int:
    """A step count of status.json; ValueError when it is not a whole number."""
    value = status.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ValueError(f"status.json '{key}' is {safe_text(repr(value), 40)}, not a step count")
    return int(value)


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
    with atomic_target(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in parts:
            z.write(p, arcname=p.name)
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


KINDS = ("generate", "mesh", "edit")
"""What made a run: `dream3d generate` (a NeRF run), the mesh stage (`dream3d refine`, two-stage recipes) or a
DDS edit of another run (`dream3d edit`, the Edit tab)."""


def run_kind(run: RunFolder, status: dict) -> str:
    """The run's kind (KINDS) from status.json's `stage` (else the config's) and the config's `edit_source`."""
    try:
        cfg = run.read_config()
    except Exception:  # noqa: BLE001 - a damaged config still shows in the gallery, by its status
        stage, edited = status.get("stage", "nerf"), False
    else:
        stage, edited = status.get("stage", cfg.stage), bool(cfg.edit_source)
    return "mesh" if stage == "mesh" else "edit" if edited else "generate"


def read_run(run_dir: Path, name: str | None = None) -> RunInfo:
    """RunInfo of a run folder (its status, previews and export); the OBJ zip is made if missing. name: its
    gallery name (default: the folder name)."""
    run = RunFolder(run_dir)
    status = run.read_status()
    if not status and run.status.exists():  # status.json is written whole (atomically): never an empty mapping
        raise ValueError("status.json holds no run status (not a JSON mapping)")
    return RunInfo(name=name or run.name, path=run.path, state=str(status.get("state", "unknown")),
                   kind=run_kind(run, status), step=_count(status, "step"), steps=_count(status, "steps"),
                   prompt=str(status.get("prompt", "")), method=str(status.get("method", "")),
                   preview=run.latest_preview(), glb=_existing(run.glb), obj_zip=obj_zip(run.path),
                   config=_existing(run.config), video=_existing(run.turntable), mtime=_mtime(run.path))


def read_run_safely(run_dir: Path, name: str | None = None) -> RunInfo:
    """`read_run`, or an unreadable RunInfo with one line saying why (a damaged or odd folder never breaks the
    gallery or the run list for anyone)."""
    try:
        return read_run(run_dir, name)
    except Exception as e:  # noqa: BLE001 - whatever is in the folder, the page keeps working
        problem = safe_text(str(e).splitlines()[0] if str(e) else type(e).__name__, 120)
        log.warning("run folder %s is unreadable: %s", safe_text(run_dir), problem)
        return RunInfo.unreadable(Path(run_dir), name or Path(run_dir).name, problem)


MAX_DEPTH = 3  # folder levels below the outputs root searched for runs (outputs/batch-x/<run> is level 2)


def _run_folders(root: Path, depth: int = 1):
    """Run folders (with a config and a status) under `root`, a run's own subfolders not searched."""
    try:
        children = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return
    for d in children:
        run = RunFolder(d)
        if run.is_run():
            if run.status.is_file():
                yield d
        elif depth < MAX_DEPTH:
            yield from _run_folders(d, depth + 1)


def list_runs(root: Path) -> list[RunInfo]:
    """Every run folder under `root` (direct children and those in batch folders, `root/batch-*/<run>`, up to
    MAX_DEPTH levels down), newest first; each named by its path relative to `root`."""
    if not root.is_dir():
        return []
    runs = [read_run_safely(d, d.relative_to(root).as_posix()) for d in _run_folders(root)]
    return sorted(runs, key=lambda r: r.mtime, reverse=True)


def resolve_run(root: Path, name: str) -> Path:
    """The run folder `root/name`; a user-supplied name must be a relative path of plain folder names (as
    `list_runs` gives) to an existing run inside `root`."""
    parts = name.split("/") if name else []
    if not parts or len(parts) > MAX_DEPTH or any(not p or p in (".", "..") or Path(p).name != p or "\\" in p
                                                  for p in parts):
        raise Dream3DError(f"unknown run '{safe_text(name, 80)}'")
    path = root.joinpath(*parts)
    try:
        inside = RunFolder(path).is_run() and path.resolve().is_relative_to(root.resolve())
    except OSError:  # e.g. a name longer than the file system takes
        inside = False
    if not inside:
        raise Dream3DError(f"unknown run '{safe_text(name, 80)}' (no such run folder in {safe_text(root)})")
    return path
