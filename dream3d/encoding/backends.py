"""Backend choice for the hash grid: `auto | cpp | cuda | tcnn | torch`.

`auto` on CUDA tensors: our CUDA kernel if it builds, else tinycudann if the user installed it, else torch; on
CPU tensors: our C++ kernel if it builds, else torch; on any other device: torch. Every choice is logged once on
the "dream3d" logger. Optional pieces (compiled kernels, tinycudann) are only touched on first use.
"""

from __future__ import annotations

import importlib.util
import logging
import threading

import torch

from ..errors import Dream3DError
from . import extension

logger = logging.getLogger("dream3d")

BACKENDS = ("auto", "cpp", "cuda", "tcnn", "torch")
_logged: set[tuple[str, str, str]] = set()
_log_lock = threading.Lock()


def tcnn_available() -> bool:
    """True when `tinycudann` is importable and CUDA is available (checked without importing it)."""
    return torch.cuda.is_available() and importlib.util.find_spec("tinycudann") is not None


def _unavailable(backend: str, device: torch.device, why: str) -> Dream3DError:
    return Dream3DError(f"hash-grid backend '{backend}' is not available on {device.type}: {why}")


def resolve_backend(requested: str, device: torch.device) -> str:
    """The concrete backend (`cpp|cuda|tcnn|torch`) to use for tensors on `device`.

    An explicitly requested backend that cannot run raises a `Dream3DError`; `auto` never raises.
    """
    if requested not in BACKENDS:
        raise Dream3DError(f"unknown hash-grid backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            chosen = "cuda" if extension.load("cuda") else "tcnn" if tcnn_available() else "torch"
        elif kind == "cpu":
            chosen = "cpp" if extension.load("cpu") else "torch"
        else:
            chosen = "torch"
    else:
        chosen = requested
        if requested == "cpp" and (kind != "cpu" or extension.load("cpu") is None):
            raise _unavailable("cpp", device, "needs CPU tensors" if kind != "cpu" else extension.load_error("cpu"))
        if requested == "cuda" and (kind != "cuda" or extension.load("cuda") is None):
            why = "needs CUDA tensors" if kind != "cuda" else extension.load_error("cuda")
            raise _unavailable("cuda", device, why)
        if requested == "tcnn" and (kind != "cuda" or not tcnn_available()):
            raise _unavailable("tcnn", device, "needs CUDA tensors and the tinycudann package")
    with _log_lock:
        key = (requested, kind, chosen)
        if key not in _logged:
            _logged.add(key)
            why = f" ({extension.load_error('cpu' if kind == 'cpu' else 'cuda')})" if chosen == "torch" and \
                requested == "auto" and kind in ("cpu", "cuda") else ""
            logger.info("hash-grid encoding uses backend '%s' on %s%s", chosen, kind, why)
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
