"""Verified, atomic checkpoints: tensors in safetensors, everything else in JSON (never pickle).

A checkpoint is a folder `<dir>/` with `tensors.safetensors` and `meta.json`; meta.json records the tensor
file's size and SHA-256 (`"tensors_file": {"bytes", "sha256"}`). A save writes a temporary sibling
`<dir>.tmp/`, reads it back to verify it, and only then moves the previous checkpoint to `<dir>.prev/` and the new
one into place, so a crash or a full disk at any moment leaves a complete earlier checkpoint. A load takes the
newest of `<dir>/`, `<dir>.old/` (left by older versions' swap) and `<dir>.prev/` that verifies, and logs one line
when it had to skip a damaged one; a checkpoint is read into memory whole (the file is not kept mapped, so
replacing it frees its space). Damage that leaves nothing to load is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dream3d.errors import Dream3DError, os_error_text, safe_text

TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
log = logging.getLogger("dream3d")


class CheckpointError(Dream3DError):
    """A checkpoint that cannot be written or read (damaged, foreign, no space left); one line naming the file."""


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def candidates(path: str | Path) -> list[Path]:
    """The folders a checkpoint at `path` may be in, newest first: itself, `.old` (a swap cut short by older
    versions), `.prev` (the previous checkpoint)."""
    path = Path(path)
    return [path, _sibling(path, ".old"), _sibling(path, ".prev")]


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write_failed(path: Path, e: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write the checkpoint {safe_text(path)} ({os_error_text(e)}); the previous "
                           "checkpoint is kept: free space, then resume the run")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write `tensors` and JSON-serialisable `meta` to the folder `path`, verified, keeping the previous
    checkpoint as `<path>.prev` (see module doc). CheckpointError (previous checkpoint intact) when the write
    fails, e.g. on a full disk."""
    path = Path(path)
    tmp, prev = _sibling(path, ".tmp"), _sibling(path, ".prev")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        data = save_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        record = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (tmp / TENSORS_FILE).write_bytes(data)
        del data
        (tmp / META_FILE).write_text(json.dumps({**meta, "tensors_file": record}, indent=1))
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            _fsync(f)
        problem = _verify_file(tmp / TENSORS_FILE, record)
        if problem:
            raise CheckpointError(f"the checkpoint just written to {safe_text(tmp)} does not verify ({problem}); "
                                  "the previous checkpoint is kept")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(path, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(path, prev)
    os.replace(tmp, path)
    old = _sibling(path, ".old")
    if old.exists():
        shutil.rmtree(old)


def _verify_file(file: Path, record: dict) -> str:
    """'' when `file` has the size and SHA-256 of `record`, else what differs."""
    size = file.stat().st_size
    if size != record.get("bytes"):
        return f"{TENSORS_FILE} is {size} bytes, meta.json says {record.get('bytes')}"
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "" if digest.hexdigest() == record.get("sha256") else f"the checksum of {TENSORS_FILE} does not match"


def find_checkpoint(path: str | Path) -> Path | None:
    """The newest folder among `candidates(path)` that holds a checkpoint file (whole or damaged), or None."""
    for cand in candidates(path):
        if (cand / META_FILE).exists() or (cand / TENSORS_FILE).exists():
            return cand
    return None


def _read_verified(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors on the CPU, meta) of one checkpoint folder; CheckpointError saying what is damaged."""
    meta_path, tensors_path = folder / META_FILE, folder / TENSORS_FILE
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{safe_text(meta_path)} is missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{safe_text(meta_path)} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{safe_text(meta_path)} is not a dream3d checkpoint record (no step)")
    try:
        data = tensors_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{safe_text(tensors_path)} is missing") from None
    record = meta.get("tensors_file")
    if isinstance(record, dict):
        if len(data) != record.get("bytes"):
            raise CheckpointError(f"{safe_text(tensors_path)} is {len(data)} bytes, meta.json says "
                                  f"{safe_text(record.get('bytes'))} (cut short?)")
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            raise CheckpointError(f"{safe_text(tensors_path)} does not match the checksum in meta.json")
    try:
        tensors = load_safetensors(data)
    except Exception as e:  # safetensors raises its own SafetensorError on any damage
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{safe_text(tensors_path)} is not a readable safetensors file "
                              f"({safe_text(first, 120)})") from None
    return tensors, meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors on `device`, meta) of the newest checkpoint at `path` that verifies (see module doc).

    FileNotFoundError when there is none at all; CheckpointError when every one found is damaged.
    """
    damaged: list[str] = []
    for cand in candidates(path):
        if not ((cand / META_FILE).exists() or (cand / TENSORS_FILE).exists()):
            continue
        try:
            tensors, meta = _read_verified(cand)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        if damaged:
            log.warning("skipped a damaged checkpoint (%s); using %s (step %d)", damaged[0], safe_text(cand),
                        meta["step"])
        if str(device) != "cpu":
            tensors = {k: v.to(device) for k, v in tensors.items()}
        return tensors, meta
    if damaged:
        earlier = "; no earlier checkpoint is readable" if len(damaged) == 1 else \
            f"; the {len(damaged) - 1} earlier one(s) are damaged too"
        raise CheckpointError(damaged[0] + earlier)
    raise FileNotFoundError(f"no checkpoint in {path}")


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state_dict with keys prefixed `prefix.`."""
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def _mismatch(source: object, e: Exception) -> CheckpointError:
    """The one line for a checkpoint whose tensors do not fit the module built from the run's config."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                  lines[-1] if lines else type(e).__name__)
    return CheckpointError(f"{safe_text(source)} does not fit the run's config ({safe_text(detail, 160)}); was "
                           "config.yaml edited after the run started?")


def load_module_tensors(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor],
                        source: str | Path = "the checkpoint") -> None:
    """Load the `prefix.` tensors into `module`; CheckpointError naming `source` when they do not fit."""
    p = prefix + "."
    try:
        module.load_state_dict({k[len(p):]: v for k, v in tensors.items() if k.startswith(p)})
    except RuntimeError as e:
        raise _mismatch(source, e) from None


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into tensors (for safetensors) and JSON metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_tensors(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict, source: str | Path = "the checkpoint") -> None:
    """Restore an optimizer split by `optimizer_tensors`; CheckpointError naming `source` when it does not fit."""
    state: dict[int, dict] = {}
    p = prefix + "."
    try:
        for key, v in tensors.items():
            if key.startswith(p):
                pid, name = key[len(p):].split(".", 1)
                state.setdefault(int(pid), {})[name] = v
        for key, v in meta["scalars"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise _mismatch(source, e) from None
