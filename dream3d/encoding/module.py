"""`HashGridEncoding`: tiny-cuda-nn's multiresolution hash encoding as an `nn.Module` with several backends."""

from __future__ import annotations

import torch
from torch import nn

from .. import native
from ..errors import Dream3DError
from .backends import BACKENDS, TcnnAdapter, resolve_backend
from .kernels import KernelSpec, kernel_encode
from .levels import LevelInfo, level_table, n_params
from .reference import hashgrid_torch

INTERPOLATIONS = ("linear", "smoothstep")
KERNEL_DIMS = (2, 3, 4)  # input dimensions our compiled kernels are built for


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding, exactly tcnn's "HashGrid" definition.

    Parameters live in one flat `params` Parameter of Σ_l entries_l · F floats (levels one after another, F
    features contiguous per entry), so a state dict moves between backends (`cpp`, `cuda`, `tcnn`, `torch`).

    forward: x (N, D) or (..., D) float in [0, 1] -> (N, L·F) (or (..., L·F)) float32, level-major.
    """

    def __init__(
        self,
        n_input_dims: int = 3,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        per_level_scale: float = 1.4472692374403782,
        interpolation: str = "linear",
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise Dream3DError(f"unknown hash-grid interpolation {interpolation!r}; choose linear or smoothstep")
        if backend not in BACKENDS:
            raise Dream3DError(f"unknown hash-grid backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if n_features_per_level not in (1, 2, 4, 8):
            raise Dream3DError(f"n_features_per_level must be 1, 2, 4 or 8, got {n_features_per_level}")
        self.n_input_dims = n_input_dims
        self.n_levels = n_levels
        self.n_features_per_level = n_features_per_level
        self.log2_hashmap_size = log2_hashmap_size
        self.base_resolution = base_resolution
        self.per_level_scale = per_level_scale
        self.interpolation = interpolation
        self.backend = backend
        self.levels: list[LevelInfo] = level_table(
            n_input_dims, n_levels, log2_hashmap_size, base_resolution, per_level_scale
        )
        self.n_output_dims = n_levels * n_features_per_level
        self.params = nn.Parameter(torch.empty(n_params(self.levels, n_features_per_level), dtype=dtype))
        self.reset_parameters()
        self._spec = KernelSpec(tuple(self.levels), n_features_per_level, interpolation)
        self._tcnn: TcnnAdapter | None = None

    def reset_parameters(self) -> None:
        """tcnn's initialisation: uniform(−1e-4, 1e-4)."""
        with torch.no_grad():
            self.params.uniform_(-1e-4, 1e-4)

    def tcnn_config(self) -> dict:
        """The equivalent tinycudann encoding config."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": self.interpolation.capitalize(),
        }

    def backend_for(self, device: torch.device) -> str:
        """The concrete backend this module uses for inputs on `device`."""
        return resolve_backend(self.backend, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_input_dims:
            raise ValueError(f"expected inputs (..., {self.n_input_dims}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x = x.reshape(-1, self.n_input_dims)
        backend = self.backend_for(x.device)
        if backend in ("cpp", "cuda") and self.n_input_dims not in KERNEL_DIMS:
            if self.backend != "auto":
                raise Dream3DError(f"hash-grid backend '{backend}' supports n_input_dims in {KERNEL_DIMS}")
            backend = "torch"
        if backend == "torch":
            out = hashgrid_torch(x.float(), self.params, self.levels, self.n_features_per_level, self.interpolation)
        elif backend == "tcnn":
            if self._tcnn is None:
                self._tcnn = TcnnAdapter(self.n_input_dims, self.tcnn_config(), self.params.numel(),
                                         self.params.dtype)
            out = self._tcnn(x.float().contiguous(), self.params)
        else:
            ext = native.load("hashgrid", "cpu" if backend == "cpp" else "cuda")
            params = self.params
            if backend == "cpp" and params.dtype != torch.float32:
                params = params.float()  # the CPU kernel computes in float32; autograd casts the grad back
            out = kernel_encode(x.float().contiguous(), params, ext, self._spec)
        return out.reshape(*lead, self.n_output_dims)

    def extra_repr(self) -> str:
        return (f"n_input_dims={self.n_input_dims}, n_levels={self.n_levels}, "
                f"n_features_per_level={self.n_features_per_level}, log2_hashmap_size={self.log2_hashmap_size}, "
                f"base_resolution={self.base_resolution}, per_level_scale={self.per_level_scale}, "
                f"interpolation={self.interpolation}, backend={self.backend}, n_params={self.params.numel()}")
