"""Builds and loads our C++ (CPU) and CUDA kernels with `torch.utils.cpp_extension.load`.

Each kernel is one entry of `KERNELS`: its sources (in `dream3d.recipes.kernel_source_dir(kernel)`, the
repository's `extensions/<kernel>/`, or `$DREAM3D_EXT_SRC/<kernel>`) and compiler flags per kind (`cpu`, `cuda`).
A kernel is built on first use into `$DREAM3D_EXT_CACHE` (default `~/.cache/dream3d/extensions`), in a folder
named by the module and a cache key: a short hash over the sources' bytes, the flags, the Python version, the
torch version, its C++ ABI and its CUDA version. Venvs with the same toolchain share a build; others never
overwrite each other's.

A build holds our own lock, `dream3d-build.lock` in its build folder (fcntl, with the owner's pid, host and start
time), so it cannot hang: a lock whose owner is gone is taken over (one line), torch's own `lock` file left there
by a killed build is removed, a process that waits says once whose build it waits for and, after
`$DREAM3D_BUILD_WAIT` seconds (default 600), gives up and uses the fallback (one line naming the lock and its
owner). Ctrl-C or SIGTERM during a build or a wait stops it (KeyboardInterrupt; the lock is released).
`DREAM3D_NO_EXT=1` disables building. A failed build logs one line and `load` returns None, so callers fall back
to their torch reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from dream3d.errors import safe_text
from dream3d.lockfile import LockBusy, describe_owner, describe_takeover, held
from dream3d.recipes import kernel_source_dir

logger = logging.getLogger("dream3d")

KINDS = ("cpu", "cuda")
BUILD_LOCK = "dream3d-build.lock"
TORCH_BATON = "lock"  # torch.utils.cpp_extension waits for ever while this file exists in the build folder
DEFAULT_BUILD_WAIT_S = 600.0
_HEADER_SUFFIXES = (".h", ".hpp", ".cuh")


@dataclass(frozen=True)
class KernelBuild:
    """How to build one kind of one kernel: source file names (in the kernel's source folder) and flags."""

    kernel: str
    kind: str
    title: str  # in messages: "the cpu <title> kernel"
    sources: tuple[str, ...]
    cflags: tuple[str, ...] = ("-O3",)
    cuda_cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    # False: the sources register torch operators (TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)) and `load` returns
    # their namespace `torch.ops.<module_name>`; True: a pybind11 module. Without pybind11's and torch's Python
    # headers a kernel compiles about 2.4x faster (the CPU hash grid 15 s instead of 35 s, the splatting kernel
    # 10 s instead of 25 s, on one core); from Python the operators behave the same (calls release the GIL).
    python_module: bool = True

    @property
    def module_name(self) -> str:
        return f"dream3d_{self.kernel}_{self.kind}"


KERNELS: dict[tuple[str, str], KernelBuild] = {
    ("hashgrid", "cpu"): KernelBuild("hashgrid", "cpu", "hash-grid", ("hashgrid_cpu.cpp",),
                                     cflags=("-O3", "-fopenmp"), ldflags=("-fopenmp",), python_module=False),
    ("hashgrid", "cuda"): KernelBuild("hashgrid", "cuda", "hash-grid", ("hashgrid_cuda_binding.cpp", "hashgrid_cuda.cu"),
                                      cflags=("-O3",), cuda_cflags=("-O3",)),
    ("splat", "cpu"): KernelBuild("splat", "cpu", "splatting", ("splat_cpu.cpp",),
                                  cflags=("-O3", "-fopenmp"), ldflags=("-fopenmp",), python_module=False),
}

_lock = threading.Lock()
_loaded: dict[tuple[str, str], ModuleType | None] = {}
_errors: dict[tuple[str, str], str] = {}


class BuildLockTimeout(RuntimeError):
    """Another process held a kernel's build lock for longer than `$DREAM3D_BUILD_WAIT` seconds."""


def spec(kernel: str, kind: str) -> KernelBuild:
    """The build entry of `kernel` for `kind`; ValueError for an unknown kernel or kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown extension kind {kind!r}")
    try:
        return KERNELS[(kernel, kind)]
    except KeyError:
        raise ValueError(f"unknown kernel {kernel!r} for {kind!r}") from None


def source_dir(kernel: str = "hashgrid") -> Path:
    """Folder of a kernel's sources: `$DREAM3D_EXT_SRC/<kernel>`, else the installed `dream3d.extensions`."""
    env = os.environ.get("DREAM3D_EXT_SRC")
    return Path(env) / kernel if env else kernel_source_dir(kernel)


def cache_dir() -> Path:
    """Root folder for built extensions."""
    env = os.environ.get("DREAM3D_EXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dream3d" / "extensions"


def extensions_disabled() -> bool:
    """True when `DREAM3D_NO_EXT` is set to a true value."""
    return os.environ.get("DREAM3D_NO_EXT", "").strip().lower() in ("1", "true", "yes", "on")


def build_wait_s() -> float:
    """How long a process waits for another one's build of the same kernel: `$DREAM3D_BUILD_WAIT` seconds."""
    try:
        return max(0.0, float(os.environ.get("DREAM3D_BUILD_WAIT", DEFAULT_BUILD_WAIT_S)))
    except ValueError:
        return DEFAULT_BUILD_WAIT_S


def _key_files(build: KernelBuild, src: Path) -> list[Path]:
    """The files whose bytes the cache key covers: the sources, then every header in the source folder."""
    headers = sorted(p for p in src.iterdir() if p.suffix in _HEADER_SUFFIXES) if src.is_dir() else []
    return [src / s for s in build.sources] + headers


def toolchain() -> dict[str, str]:
    """What a built module depends on besides its sources and flags: Python, torch, its C++ ABI and CUDA."""
    import torch

    return {"python": sys.implementation.cache_tag or sys.version.split()[0],
            "torch": torch.__version__,
            "cxx11_abi": str(bool(torch._C._GLIBCXX_USE_CXX11_ABI)),
            "cuda": str(torch.version.cuda)}


def cache_key(build: KernelBuild, src: Path, tools: dict[str, str] | None = None) -> str:
    """12 hex digits of a SHA-256 over the kernel's source bytes, its flags and the toolchain (`toolchain()`)."""
    h = hashlib.sha256()
    for path in _key_files(build, src):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    flags = {"cflags": build.cflags, "cuda_cflags": build.cuda_cflags, "ldflags": build.ldflags}
    h.update(json.dumps({"flags": flags, "tools": tools or toolchain()}, sort_keys=True).encode())
    return h.hexdigest()[:12]


def build_dir(build: KernelBuild) -> Path:
    """The folder a kernel is built into: `<cache>/<module>-<cache key>`."""
    return cache_dir() / f"{build.module_name}-{cache_key(build, source_dir(build.kernel))}"


@contextlib.contextmanager
def build_lock(folder: Path, what: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold `folder/dream3d-build.lock` while building `what` there.

    Waits for another process holding it (one line saying whose build it waits for) for at most `wait_s` seconds
    (default `build_wait_s()`), then raises BuildLockTimeout naming the lock and its owner. A lock file left by a
    process that no longer holds it is taken over (one line), and torch's own baton left by a killed build is
    removed.
    """
    wait_s = build_wait_s() if wait_s is None else wait_s
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / BUILD_LOCK

    def waiting(owner: dict) -> None:
        logger.warning("waiting for the build of %s by %s (lock %s; at most %g s, DREAM3D_BUILD_WAIT)",
                       what, describe_owner(owner), safe_text(path), wait_s)

    try:
        with held(path, {"building": what}, wait_s=wait_s, on_wait=waiting) as previous:
            if previous:
                logger.warning("took over the build lock %s left by %s (%s)", safe_text(path),
                               describe_owner(previous), describe_takeover(previous))
            (folder / TORCH_BATON).unlink(missing_ok=True)  # only a holder of our lock builds here: this is stale
            yield
    except LockBusy as busy:
        raise BuildLockTimeout(f"waited {wait_s:g} s for the build lock {safe_text(path)} held by "
                               f"{describe_owner(busy.owner)}") from None


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """In the main thread, let Ctrl-C and SIGTERM raise KeyboardInterrupt (a trainer's stop handler would
    otherwise only note them, and a build would go on for minutes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"kernel build stopped by {signal.Signals(signum).name}")

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _build(build: KernelBuild) -> ModuleType:
    import torch
    from torch.utils import cpp_extension  # imported lazily: it pulls in setuptools machinery

    if build.kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    src = source_dir(build.kernel)
    sources = [src / s for s in build.sources]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"kernel sources not found: {', '.join(missing)}")
    folder = build_dir(build)
    what = f"the {build.kind} {build.title} kernel"
    logger.info("loading %s (compiled on first use into %s)", what, folder)
    with _interruptible(), build_lock(folder, what):
        module = cpp_extension.load(
            name=build.module_name,
            sources=[str(s) for s in sources],
            extra_cflags=list(build.cflags),
            extra_cuda_cflags=list(build.cuda_cflags) or None,
            extra_ldflags=list(build.ldflags) or None,
            build_directory=str(folder),
            verbose=os.environ.get("DREAM3D_EXT_VERBOSE", "") == "1",
            is_python_module=build.python_module,
        )
    return module if build.python_module else getattr(torch.ops, build.module_name)


def load(kernel: str, kind: str) -> ModuleType | None:
    """The built `cpu` or `cuda` module of `kernel`, or None (disabled, build failed or waited out; logged once)."""
    build = spec(kernel, kind)
    key = (kernel, kind)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        module: ModuleType | None = None
        if extensions_disabled():
            _errors[key] = "disabled by DREAM3D_NO_EXT"
        else:
            try:
                module = _build(build)
            except Exception as exc:  # any build/load failure means "not available"
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                _errors[key] = f"{type(exc).__name__}: {first}"[:300]
                logger.warning("building the %s %s kernel failed (%s); using a fallback",
                               kind, build.title, _errors[key])
        _loaded[key] = module
        return module


def load_error(kernel: str, kind: str) -> str | None:
    """Why `load(kernel, kind)` returned None, if it did."""
    return _errors.get((kernel, kind))


def reset() -> None:
    """Forget loaded/failed kernels (tests flip `DREAM3D_NO_EXT`)."""
    with _lock:
        _loaded.clear()
        _errors.clear()
