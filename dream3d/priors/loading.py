"""Reading a diffusers-layout prior folder (local or hub id): model_index.json, components, dream3d metadata.

Every component is loaded with its library's own `from_pretrained(name_or_path, subfolder=component)`, so hub
ids download exactly like diffusers pipelines do. Only the components a prior needs are loaded; the rest of
model_index.json (safety checker, feature extractor, watermarker, ...) is ignored.

Hub ids without a network: when `HF_HUB_OFFLINE` is set, or when a quick probe finds the hub's address out of
reach, only the local hub cache is read (`local_files_only`), so a missing model is one line at once instead of
the hub client's retries.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import socket
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any

import torch

from dream3d.errors import ModelLoadError, safe_text

NEEDED = ("tokenizer", "text_encoder", "unet", "scheduler")
OPTIONAL = ("vae",)
METADATA_FILE = "dream3d_prior.json"
_LIBRARIES = ("diffusers", "transformers")


def fail(name: str, reason: str) -> ModelLoadError:
    """The one-line error for a prior that cannot be loaded."""
    reason = " ".join(str(reason).split()) or "unknown error"
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return ModelLoadError(f"cannot load prior '{safe_text(name)}': {reason}")


HUB_PROBE_SECONDS = 3.0  # how long the probe of the hub's address may take


@functools.lru_cache(maxsize=1)
def hub_offline() -> str:
    """Why hub ids are read from the local cache only ("" when the hub is to be asked): `HF_HUB_OFFLINE` set, or
    the hub's host (`HF_ENDPOINT`, default huggingface.co) not resolvable or not connectable within
    HUB_PROBE_SECONDS. With a proxy configured the probe is skipped (the proxy may reach what this host cannot).
    Checked once per process."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return ""
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS):
            return ""
    except OSError as e:
        return f"{host} is out of reach ({e.strerror or type(e).__name__})"


def _offline_reason(name: str, why: str) -> ModelLoadError:
    """The one line for a hub id that is not in the local cache while the hub cannot be asked."""
    return fail(name, f"not in the local hub cache, and {why}; download it where the hub is reachable "
                      "(it lands in ~/.cache/huggingface), or give a local diffusers folder")


def looks_like_path(name: str) -> bool:
    """True when `name` is meant as a filesystem path rather than a hub id ("owner/model")."""
    return (name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
            or Path(name).expanduser().exists())


def _read_json_file(name: str, filename: str, local: bool, required: bool) -> dict | None:
    if local:
        path = Path(name).expanduser() / filename
        if not path.is_file():
            return None
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise fail(name, f"{filename} is not UTF-8 text (byte {e.start})") from None
        except OSError as e:
            raise fail(name, f"cannot read {filename} ({e.strerror or type(e).__name__})") from None
    else:
        try:
            from huggingface_hub import hf_hub_download

            offline = hub_offline()
            text = Path(hf_hub_download(name, filename, local_files_only=bool(offline))).read_text()
        except Exception as e:  # network, missing repo, missing file
            if required:
                raise (_offline_reason(name, offline) if offline else fail(name, f"{type(e).__name__}: {e}")) \
                    from None
            return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(name, f"{filename} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise fail(name, f"{filename} is not a JSON object")
    return data


def read_index(name: str) -> tuple[dict, dict, bool]:
    """(model_index, dream3d metadata, is_local) for a folder or hub id; ModelLoadError when unusable."""
    local = looks_like_path(name)
    if local:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise fail(name, "no such folder")
    elif "/" not in name:
        raise fail(name, "no such folder (hub ids look like 'owner/name')")
    index = _read_json_file(name, "model_index.json", local, required=True)
    if index is None:
        raise fail(name, "the folder has no model_index.json (not a diffusers model folder)")
    meta = _read_json_file(name, METADATA_FILE, local, required=False) or {}
    if "text_encoder_2" in index:
        raise fail(name, "models with two text encoders (SDXL-style) are not supported; use an SD 1.x/2.x, "
                         "DeepFloyd IF stage I, or dream3d shapes prior")
    missing = [c for c in NEEDED if not _spec(index, c)]
    if missing:
        raise fail(name, f"model_index.json has no {', '.join(repr(m) for m in missing)} component")
    return index, meta, local


def _spec(index: dict, component: str) -> tuple[str, str] | None:
    spec = index.get(component)
    if isinstance(spec, (list, tuple)) and len(spec) == 2 and all(isinstance(s, str) for s in spec):
        return spec[0], spec[1]
    return None


def load_component(name: str, index: dict, component: str, dtype: torch.dtype | None) -> Any:
    """Instantiate one component via `<library>.<Class>.from_pretrained(name, subfolder=component)`.

    dtype applies to torch modules only (diffusers takes `torch_dtype`, transformers `dtype`).
    """
    library, class_name = _spec(index, component)  # type: ignore[misc]
    if library not in _LIBRARIES:
        raise fail(name, f"component '{component}' comes from unsupported library '{library}'")
    cls = getattr(importlib.import_module(library), class_name, None)
    if cls is None:
        raise fail(name, f"{library} has no class {class_name} (component '{component}'); "
                         f"upgrade {library}?")
    kwargs: dict[str, Any] = {"subfolder": component}
    offline = "" if looks_like_path(name) else hub_offline()
    if offline:
        kwargs["local_files_only"] = True
    if dtype is not None and isinstance(cls, type) and issubclass(cls, torch.nn.Module):
        kwargs["torch_dtype" if library == "diffusers" else "dtype"] = dtype
    try:
        return cls.from_pretrained(os.fspath(Path(name).expanduser()) if looks_like_path(name) else name, **kwargs)
    except Exception as e:  # missing files, bad configs, network, ...
        if offline:
            raise _offline_reason(name, offline) from None
        raise fail(name, f"component '{component}' ({class_name}): {type(e).__name__}: {e}") from None
