"""Backend choice for the hash grid: `auto | cpp | cuda | tcnn | torch`, with a self-check of compiled kernels.

`auto` on CUDA tensors: our CUDA kernel if it builds, else tinycudann if the user installed it, else torch; on
CPU tensors: our C++ kernel if it builds, else torch; on any other device: torch. Every choice is logged once on
the "dream3d" logger. Optional pieces (compiled kernels, tinycudann) are only touched on first use.

Self-check: the first time a compiled backend (`cpp`, `cuda`, `tcnn`) is chosen for a device, it encodes a fixed
small batch (`SELF_CHECK_CASES`, 256 points, seeded by its own `torch.Generator`, so no random stream that
training uses moves) and is compared with the torch reference: the output, the gradient w.r.t. the table and,
where the backend returns one, the gradient w.r.t. the inputs. The error of each quantity is
`max|kernel − reference| / max(1, max|reference|)` and must stay within `SELF_CHECK_TOLERANCE` (float32). A
backend that fails is skipped by `auto` with one warning line (the next candidate is checked in turn); asking
for it explicitly is a one-line `Dream3DError`. The verdict is kept per process and (backend, device).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import native
from ..errors import Dream3DError
from .kernels import KernelSpec, kernel_encode
from .levels import level_table, n_params
from .reference import hashgrid_torch

logger = logging.getLogger("dream3d")

BACKENDS = ("auto", "cpp", "cuda", "tcnn", "torch")
COMPILED = ("cpp", "cuda", "tcnn")
# The candidates `auto` tries in order, per device type; torch is the last resort everywhere.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("cpp",), "cuda": ("cuda", "tcnn")}

SELF_CHECK_TOLERANCE = 1e-4  # on max|kernel − reference| / max(1, max|reference|), per quantity
SELF_CHECK_POINTS = 256
SELF_CHECK_SEED = 0x5EED
# (n_input_dims, log2_hashmap_size, interpolation): every level set mixes dense levels and hashed ones (6 levels,
# base resolution 4, growth 1.5 -> resolutions 4, 6, 9, 14, 21, 31; for D=3, 4^3 = 64 rows is exactly dense).
SELF_CHECK_CASES: tuple[tuple[int, int, str], ...] = ((3, 12, "linear"), (3, 12, "smoothstep"), (2, 8, "linear"),
                                                      (4, 8, "smoothstep"))
TCNN_CHECK_CASES: tuple[tuple[int, int, str], ...] = ((3, 12, "linear"), (3, 12, "smoothstep"))
_CHECK_LEVELS = dict(n_levels=6, base_resolution=4, per_level_scale=1.5)
_CHECK_FEATURES = 2

_logged: set[tuple[str, str, str]] = set()
_log_lock = threading.Lock()
_checks: dict[tuple[str, str], tuple[object, SelfCheck]] = {}
_check_lock = threading.RLock()


@dataclass(frozen=True)
class SelfCheck:
    """The verdict of one backend's comparison with the torch reference on one device.

    ok: every error within `tolerance`. max_error: the largest relative error over all cases and quantities;
    worst: which quantity and case it was (e.g. "forward, D=3 linear"); ms: wall time of the whole check;
    error: why the check could not run (an exception's first line), else None.
    """

    backend: str
    device: str
    ok: bool
    max_error: float
    worst: str
    ms: float
    tolerance: float = SELF_CHECK_TOLERANCE
    error: str | None = None

    def describe(self) -> str:
        """One phrase: 'passed (max error 3.1e-07, 4 ms)' or why it failed."""
        if self.error is not None:
            return f"failed to run ({self.error})"
        verdict = "passed" if self.ok else "FAILED"
        return (f"{verdict} (max error {self.max_error:.1e} in {self.worst}, tolerance {self.tolerance:.0e}, "
                f"{self.ms:.0f} ms)")


def tcnn_available() -> bool:
    """True when `tinycudann` is importable and CUDA is available (checked without importing it)."""
    return torch.cuda.is_available() and importlib.util.find_spec("tinycudann") is not None


def _unavailable(backend: str, device: torch.device, why: str) -> Dream3DError:
    return Dream3DError(f"hash-grid backend '{backend}' is not available on {device.type}: {why}")


def _device_key(device: torch.device) -> str:
    """'cpu', 'cuda:0', ...: a CUDA device without an index is the current one."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device() if torch.cuda.is_available() else 0}"
    return str(device)


def availability(backend: str, device: torch.device) -> str | None:
    """None when `backend` can run on `device`'s tensors (kernel built, package present), else why not."""
    kind = device.type
    if backend == "torch":
        return None
    if backend == "cpp":
        if kind != "cpu":
            return "needs CPU tensors"
        return None if native.load("hashgrid", "cpu") is not None else native.load_error("hashgrid", "cpu")
    if backend == "cuda":
        if kind != "cuda":
            return "needs CUDA tensors"
        return None if native.load("hashgrid", "cuda") is not None else native.load_error("hashgrid", "cuda")
    if backend == "tcnn":
        return None if kind == "cuda" and tcnn_available() else "needs CUDA tensors and the tinycudann package"
    raise ValueError(f"unknown hash-grid backend {backend!r}")


def _encoder(backend: str, spec: KernelSpec, tcnn_config: dict,
             n_dims: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """encode(x (N, D) f32, params (P,) f32 Parameter) -> (N, L·F) f32 through `backend`, as HashGridEncoding
    calls it (`tcnn_config`: the same grid in tinycudann's terms)."""
    if backend in ("cpp", "cuda"):
        kind = "cpu" if backend == "cpp" else "cuda"
        ext = native.load("hashgrid", kind)
        if ext is None:
            raise RuntimeError(native.load_error("hashgrid", kind) or "kernel not built")
        return lambda x, params: kernel_encode(x, params, ext, spec)
    if backend == "tcnn":
        adapter = TcnnAdapter(n_dims, tcnn_config, n_params(list(spec.levels), spec.n_features), torch.float32)
        return adapter
    raise ValueError(f"no compiled encoder for backend {backend!r}")


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max|got − want| / max(1, max|want|), in float64 on the CPU; inf when shapes differ or values are not finite."""
    if got.shape != want.shape:
        return float("inf")
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    diff = (got - want).abs().max().item() if got.numel() else 0.0
    if diff != diff:  # NaN
        return float("inf")
    return diff / max(1.0, want.abs().max().item() if want.numel() else 0.0)


def compare_with_reference(backend: str, device: torch.device,
                           cases: tuple[tuple[int, int, str], ...] | None = None) -> SelfCheck:
    """Run `backend` and the torch reference on the fixed batches of `cases` on `device` (no caching)."""
    cases = cases if cases is not None else (TCNN_CHECK_CASES if backend == "tcnn" else SELF_CHECK_CASES)
    start = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(SELF_CHECK_SEED)
    worst, max_error = "", 0.0
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            for n_dims, log2_size, interpolation in cases:
                levels = level_table(n_dims, log2_hashmap_size=log2_size, **_CHECK_LEVELS)
                spec = KernelSpec(tuple(levels), _CHECK_FEATURES, interpolation)
                tcnn_config = {"otype": "HashGrid", "n_levels": len(levels), "n_features_per_level": _CHECK_FEATURES,
                               "log2_hashmap_size": log2_size, "base_resolution": _CHECK_LEVELS["base_resolution"],
                               "per_level_scale": _CHECK_LEVELS["per_level_scale"],
                               "interpolation": interpolation.capitalize()}
                encode = _encoder(backend, spec, tcnn_config, n_dims)
                x_cpu = torch.rand(SELF_CHECK_POINTS, n_dims, generator=gen)
                p_cpu = torch.rand(n_params(levels, _CHECK_FEATURES), generator=gen) * 2 - 1
                g_cpu = torch.randn(SELF_CHECK_POINTS, len(levels) * _CHECK_FEATURES, generator=gen)
                x_ref, p_ref = x_cpu.clone().requires_grad_(), p_cpu.clone().requires_grad_()
                y_ref = hashgrid_torch(x_ref, p_ref, levels, _CHECK_FEATURES, interpolation)
                gp_ref, gx_ref = torch.autograd.grad(y_ref, (p_ref, x_ref), g_cpu)
                x = x_cpu.to(device).requires_grad_()
                p = nn.Parameter(p_cpu.to(device))
                y = encode(x, p)
                gp, gx = torch.autograd.grad(y, (p, x), g_cpu.to(device), allow_unused=True)
                label = f"D={n_dims} {interpolation}"
                found = [("forward", y, y_ref), ("table gradient", gp, gp_ref)]
                if gx is not None:  # tinycudann may leave input gradients out
                    found.append(("input gradient", gx, gx_ref))
                for name, got, want in found:
                    err = float("inf") if got is None else _relative_error(got, want)
                    if err > max_error or not worst:
                        worst, max_error = f"{name}, {label}", err
    except Exception as exc:  # a kernel that crashes on the check batch is as unusable as a wrong one
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return SelfCheck(backend, _device_key(device), False, float("inf"), "", _ms(start),
                         error=f"{type(exc).__name__}: {first}"[:300])
    return SelfCheck(backend, _device_key(device), max_error <= SELF_CHECK_TOLERANCE, max_error, worst, _ms(start))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _kernel_token(backend: str) -> object:
    """The loaded kernel module a verdict belongs to (a reloaded kernel is checked again); None for tcnn."""
    if backend in ("cpp", "cuda"):
        return native.load("hashgrid", "cpu" if backend == "cpp" else "cuda")
    return None


def self_check(backend: str, device: torch.device) -> SelfCheck:
    """The verdict of `backend` against the torch reference on `device`: computed once per process (and per
    loaded kernel), then cached."""
    key = (backend, _device_key(device))
    token = _kernel_token(backend)
    with _check_lock:
        cached = _checks.get(key)
        if cached is None or cached[0] is not token:
            check = compare_with_reference(backend, device)
            _checks[key] = (token, check)
            logger.info("hash-grid kernel '%s' self-check on %s: %s", backend, key[1], check.describe())
        return _checks[key][1]


def reset_self_checks() -> None:
    """Forget verdicts and logged choices (tests swap kernels in and out)."""
    with _check_lock:
        _checks.clear()
    with _log_lock:
        _logged.clear()


def _mismatch(check: SelfCheck) -> str:
    if check.error is not None:
        return f"hash-grid kernel '{check.backend}' failed its self-check on {check.device} ({check.error})"
    return (f"hash-grid kernel '{check.backend}' disagrees with the torch reference on {check.device} "
            f"(max error {check.max_error:.1e} in {check.worst}, tolerance {check.tolerance:.0e})")


def resolve_backend(requested: str, device: torch.device) -> str:
    """The concrete backend (`cpp|cuda|tcnn|torch`) to use for tensors on `device`.

    An explicitly requested backend that cannot run, or fails its self-check, raises a `Dream3DError`; `auto`
    never raises: it skips such a backend (one warning line) for the next candidate, torch last.
    """
    if requested not in BACKENDS:
        raise Dream3DError(f"unknown hash-grid backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    kind = device.type
    why = ""
    if requested == "auto":
        chosen, failed = "torch", []
        for candidate in AUTO_ORDER.get(kind, ()):
            reason = availability(candidate, device)
            if reason is not None:
                why = why or reason
                continue
            check = self_check(candidate, device)
            if check.ok:
                chosen = candidate
                break
            failed.append(check)
            why = why or "self-check failed"
        with _log_lock:
            for check in failed:
                key = ("mismatch", check.backend + "@" + check.device, chosen)
                if key not in _logged:
                    _logged.add(key)
                    logger.warning("%s; using '%s'", _mismatch(check), chosen)
    else:
        chosen = requested
        reason = availability(requested, device)
        if reason is not None:
            raise _unavailable(requested, device, reason)
        if requested in COMPILED:
            check = self_check(requested, device)
            if not check.ok:
                raise Dream3DError(f"{_mismatch(check)}; use geometry.encoding_backend=torch (or auto)")
    with _log_lock:
        key = (requested, kind, chosen)
        if key not in _logged:
            _logged.add(key)
            suffix = f" ({why})" if chosen == "torch" and requested == "auto" and why else ""
            logger.info("hash-grid encoding uses backend '%s' on %s%s", chosen, kind, suffix)
    return chosen


class TcnnAdapter:
    """Runs tinycudann's HashGrid on *our* flat parameter tensor (same layout), so checkpoints move freely.

    The tcnn module is built once per configuration and its own parameter is replaced by ours at each call.
    """

    def __init__(self, n_input_dims: int, config: dict, n_params: int, dtype: torch.dtype):
        import tinycudann as tcnn  # optional, imported on first use only

        self.module = tcnn.Encoding(n_input_dims, config, dtype=dtype)
        got = self.module.params.numel()
        if got != n_params:
            raise Dream3DError(f"tinycudann's hash grid has {got} parameters, expected {n_params}")

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        self.module.params = params  # nn.Module.__setattr__ registers our Parameter in its place
        return self.module(x).float()
