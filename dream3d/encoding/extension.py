"""Builds and loads our C++ (CPU) and CUDA hash-grid kernels with `torch.utils.cpp_extension.load`.

The sources are the installed package data `dream3d.extensions` (the repository's `extensions/`, see
dream3d.recipes), or `$DREAM3D_EXT_SRC`. Built on first use into `$DREAM3D_EXT_CACHE` (default
`~/.cache/dream3d/extensions`) and cached there by torch (rebuilt only when a source or flag changes).
`DREAM3D_NO_EXT=1` disables building. A failed build logs one line and returns None, so callers fall back to the
torch reference.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import ModuleType

from dream3d.recipes import kernel_source_dir

logger = logging.getLogger("dream3d")

_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}
_errors: dict[str, str] = {}


def source_dir() -> Path:
    """Folder of the hash-grid kernel sources: `$DREAM3D_EXT_SRC`, else the installed `dream3d.extensions`."""
    env = os.environ.get("DREAM3D_EXT_SRC")
    return Path(env) if env else kernel_source_dir("hashgrid")


def cache_dir() -> Path:
    """Root folder for built extensions."""
    env = os.environ.get("DREAM3D_EXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dream3d" / "extensions"


def extensions_disabled() -> bool:
    """True when `DREAM3D_NO_EXT` is set to a true value."""
    return os.environ.get("DREAM3D_NO_EXT", "").strip().lower() in ("1", "true", "yes", "on")


def _build(kind: str) -> ModuleType:
    import torch
    from torch.utils import cpp_extension  # imported lazily: it pulls in setuptools machinery

    src = source_dir()
    if kind == "cpu":
        name, sources = "dream3d_hashgrid_cpu", [src / "hashgrid_cpu.cpp"]
        cflags, cuda_flags, ldflags = ["-O3", "-fopenmp"], None, ["-fopenmp"]
    else:
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
        name, sources = "dream3d_hashgrid_cuda", [src / "hashgrid_cuda_binding.cpp", src / "hashgrid_cuda.cu"]
        cflags, cuda_flags, ldflags = ["-O3"], ["-O3"], None
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"kernel sources not found: {', '.join(missing)}")
    build_dir = cache_dir() / f"{name}-torch{torch.__version__.replace('+', '_')}"
    build_dir.mkdir(parents=True, exist_ok=True)
    logger.info("loading the %s hash-grid kernel (compiled on first use into %s)", kind, build_dir)
    return cpp_extension.load(
        name=name,
        sources=[str(s) for s in sources],
        extra_cflags=cflags,
        extra_cuda_cflags=cuda_flags,
        extra_ldflags=ldflags,
        build_directory=str(build_dir),
        verbose=os.environ.get("DREAM3D_EXT_VERBOSE", "") == "1",
    )


def load(kind: str) -> ModuleType | None:
    """The built `cpu` or `cuda` kernel module, or None (disabled or build failed; logged once)."""
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unknown extension kind {kind!r}")
    with _lock:
        if kind in _loaded:
            return _loaded[kind]
        module: ModuleType | None = None
        if extensions_disabled():
            _errors[kind] = "disabled by DREAM3D_NO_EXT"
        else:
            try:
                module = _build(kind)
            except Exception as exc:  # any build/load failure means "not available"
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                _errors[kind] = f"{type(exc).__name__}: {first}"[:300]
                logger.warning("building the %s hash-grid kernel failed (%s); using a fallback",
                               kind, _errors[kind])
        _loaded[kind] = module
        return module


def load_error(kind: str) -> str | None:
    """Why `load(kind)` returned None, if it did."""
    return _errors.get(kind)


def reset() -> None:
    """Forget loaded/failed kernels (tests flip `DREAM3D_NO_EXT`)."""
    with _lock:
        _loaded.clear()
        _errors.clear()
