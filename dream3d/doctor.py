"""`dream3d doctor`: what this install can run, which backend `auto` picks for each piece, and why.

It reports the device, the Python / torch / CUDA versions, the build tools, the hash-grid backends (our C++ and
CUDA kernels: built or not with the build error's first line, and their self-check against the torch reference;
tinycudann), the ray marcher (nerfacc), the rasterizer (nvdiffrast), the free disk in the kernel cache folder,
and a one-line verdict:

- `OK`: every piece uses its fast backend on every device present;
- `DEGRADED`: something falls back to the pure-torch path (correct, slower); the verdict names it;
- `FAIL`: a backend named with `--require` is missing or broken.

Exit status (`run_doctor`): 0 for OK and DEGRADED, `EXIT_REQUIRED_MISSING` (1) for FAIL. Building a kernel for
the first time takes about a minute (it is cached afterwards, see dream3d.native).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dream3d import native
from dream3d.encoding import backends as hashgrid
from dream3d.errors import Dream3DError

REQUIRABLE = ("cpp", "cuda", "tcnn", "nerfacc", "nvdiffrast")
EXIT_REQUIRED_MISSING = 1
LOW_DISK_BYTES = 512 * 2**20  # a kernel build writes about 100 MB; below this the cache is called out
_GIB = 2**30


@dataclass(frozen=True)
class Piece:
    """One optional backend: whether it can be used here, and a phrase saying why (or why not)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Fallback:
    """A piece that runs on its slower pure-torch path: what happens ('the hash grid uses the torch fallback on
    cpu') and because of what ('C++ kernel not built: disabled by DREAM3D_NO_EXT')."""

    effect: str
    because: str


@dataclass
class Diagnosis:
    """Everything `dream3d doctor` prints: sections of (label, text) rows, the backends by name, the problems
    that make the verdict DEGRADED, and the free bytes of the kernel cache's file system."""

    sections: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    pieces: dict[str, Piece] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)
    cache_free_bytes: int = 0

    def verdict(self, require: list[str] | tuple[str, ...] = ()) -> tuple[str, bool]:
        """(the one-line verdict, whether every required backend is usable)."""
        missing = [self.pieces[name] for name in require if not self.pieces[name].ok]
        if missing:
            named = "; ".join(f"'{p.name}' {p.detail}" for p in missing)
            effects = "; ".join(f.effect for f in self.fallbacks)
            return f"FAIL: required backend {named}" + (f"; meanwhile {effects}" if effects else ""), False
        if self.fallbacks:
            return "DEGRADED (runs, slower): " + "; ".join(f"{f.effect} ({f.because})" for f in self.fallbacks), True
        return "OK: every piece uses its fast backend on " + " and ".join(self._devices()), True

    def _devices(self) -> list[str]:
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def render(self) -> str:
        """The report as text, labels aligned."""
        width = max((len(label) for _, rows in self.sections for label, _ in rows), default=0) + 2
        out = []
        for title, rows in self.sections:
            out.append(title)
            out.extend(f"  {label.ljust(width)}{text}" for label, text in rows)
        return "\n".join(out)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(module: str, dist: str) -> str | None:
    """'installed (1.2.3)' style text when `module` is importable (found without importing it), else None."""
    if importlib.util.find_spec(module) is None:
        return None
    version = _version(dist)
    return f"installed ({version})" if version else "installed"


def _kernel_piece(backend: str, device: torch.device | None) -> Piece:
    """Our compiled kernel `backend` ('cpp' or 'cuda'): built or why not, then its self-check."""
    if device is None:
        return Piece(backend, False, "not usable: no CUDA device")
    why = hashgrid.availability(backend, device)
    if why is not None:
        return Piece(backend, False, f"not built: {why}")
    check = hashgrid.self_check(backend, device)
    return Piece(backend, check.ok, f"built; self-check {check.describe()}")


def _tcnn_piece(cuda: torch.device | None) -> Piece:
    installed = _installed("tinycudann", "tinycudann")
    if installed is None:
        return Piece("tcnn", False, "not installed (optional: pip install tinycudann's torch bindings)")
    if cuda is None:
        return Piece("tcnn", False, f"{installed}, but not usable: no CUDA device")
    check = hashgrid.self_check("tcnn", cuda)
    return Piece("tcnn", check.ok, f"{installed}; self-check {check.describe()}")


def _cuda_package_piece(name: str, module: str, cuda: torch.device | None, loads: Callable[[], bool],
                        hint: str) -> Piece:
    installed = _installed(module, name)
    if installed is None:
        return Piece(name, False, f"not installed ({hint})")
    if cuda is None:
        return Piece(name, False, f"{installed}, but not usable: no CUDA device")
    if not loads():
        return Piece(name, False, f"{installed}, but it does not load (python -c 'import {module}' shows why)")
    return Piece(name, True, f"{installed}, loads")


def _cache_free(path: Path) -> tuple[Path, int]:
    """(the nearest existing folder at or above `path`, its file system's free bytes)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def _system_rows(cuda: torch.device | None) -> list[tuple[str, str]]:
    from torch.utils import cpp_extension  # lazily: it pulls in setuptools machinery

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    rows = [("python", f"{platform.python_version()} ({sys.executable})"),
            ("torch", f"{torch.__version__} ({build})")]
    if cuda is not None:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(("CUDA", f"available: {torch.cuda.device_count()} device(s): {names}"))
        rows.append(("nvcc", f"CUDA_HOME={cpp_extension.CUDA_HOME}" if cpp_extension.CUDA_HOME
                     else "not found (the CUDA kernel and nerfacc need it to build)"))
    else:
        rows.append(("CUDA", "not available" + (" (this torch has no CUDA support)" if not torch.version.cuda
                                                else " (no GPU visible)")))
    threads = torch.get_num_threads()
    rows.append(("device", f"auto -> {'cuda' if cuda is not None else 'cpu'} ({threads} CPU thread(s))"))
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    rows.append(("compiler", f"{compiler or 'no C++ compiler found (set CXX)'}; ninja "
                 + ("found" if cpp_extension.is_ninja_available() else "not found (pip install ninja)")))
    return rows


def diagnose() -> Diagnosis:
    """Look at this install (builds the kernels if they are not cached yet) and describe it."""
    from dream3d.render.nerfacc_backend import nerfacc_available  # the renderers only when diagnosing
    from dream3d.render.rasterize import nvdiffrast_available

    cpu = torch.device("cpu")
    cuda = torch.device("cuda") if torch.cuda.is_available() else None
    d = Diagnosis()
    d.sections.append(("system", _system_rows(cuda)))

    pieces = [_kernel_piece("cpp", cpu), _kernel_piece("cuda", cuda), _tcnn_piece(cuda),
              _cuda_package_piece("nerfacc", "nerfacc", cuda, nerfacc_available, "pip install -e '.[cuda]'"),
              _cuda_package_piece("nvdiffrast", "nvdiffrast", cuda, nvdiffrast_available,
                                  "optional: pip install nvdiffrast")]
    d.pieces = {p.name: p for p in pieces}
    p = d.pieces

    grid_cpu = hashgrid.resolve_backend("auto", cpu)
    rows = [("auto on cpu", grid_cpu)]
    if grid_cpu == "torch":
        d.fallbacks.append(Fallback("the hash grid uses the torch fallback on cpu", f"C++ kernel {p['cpp'].detail}"))
    if cuda is not None:
        grid_cuda = hashgrid.resolve_backend("auto", cuda)
        rows.append(("auto on cuda", grid_cuda))
        if grid_cuda == "torch":
            d.fallbacks.append(Fallback("the hash grid uses the torch fallback on cuda",
                                        f"CUDA kernel {p['cuda'].detail}; tinycudann {p['tcnn'].detail}"))
    else:
        rows.append(("auto on cuda", "no CUDA device"))
    rows += [("cpp kernel", p["cpp"].detail), ("cuda kernel", p["cuda"].detail), ("tinycudann", p["tcnn"].detail),
             ("sources", str(native.source_dir("hashgrid")))]
    d.sections.append(("hash grid (geometry.encoding_backend=auto)", rows))

    for piece, key, name, fallback in (("ray marching", "render.backend", "nerfacc", "the torch marcher"),
                                       ("rasterizer", "mesh.backend", "nvdiffrast", "the torch rasterizer")):
        rows = [("auto on cpu", fallback)]
        if cuda is not None:
            rows.append(("auto on cuda", name if p[name].ok else fallback))
            if not p[name].ok:
                d.fallbacks.append(Fallback(f"{piece} uses {fallback} on cuda", f"{name} {p[name].detail}"))
        else:
            rows.append(("auto on cuda", "no CUDA device"))
        rows.append((name, p[name].detail))
        d.sections.append((f"{piece} ({key}=auto)", rows))

    where, free = _cache_free(native.cache_dir())
    d.cache_free_bytes = free
    shown = str(native.cache_dir()) + ("" if where == native.cache_dir() else f" (not created yet; on {where})")
    d.sections.append(("kernel cache", [("folder", shown), ("free", f"{free / _GIB:.1f} GiB")]))
    if free < LOW_DISK_BYTES:
        d.fallbacks.append(Fallback(f"only {free / 2**20:.0f} MiB are free for the kernel cache",
                                    "a kernel build needs about 100 MB; set DREAM3D_EXT_CACHE"))
    return d


def run_doctor(require: list[str] | tuple[str, ...] = (), out: Callable[[str], None] = print) -> int:
    """Print the diagnosis and verdict; 0, or `EXIT_REQUIRED_MISSING` when a required backend is unusable."""
    unknown = [name for name in require if name not in REQUIRABLE]
    if unknown:
        raise Dream3DError(f"unknown backend {unknown[0]!r} for --require; choose from {', '.join(REQUIRABLE)}")
    d = diagnose()
    verdict, ok = d.verdict(require)
    out(d.render())
    out(f"verdict: {verdict}")
    return 0 if ok else EXIT_REQUIRED_MISSING
