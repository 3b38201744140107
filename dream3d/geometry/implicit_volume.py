"""The NeRF of text-to-3D: a hash-grid + small-MLP field of density and albedo inside a world box.

Positions live in the world box [-bound, bound]^3 and are mapped to [0,1]^3 for the hash grid. The MLP outputs
one raw density and three albedo logits. Density:

    σ(x) = act(raw(x) + blob_density · (1 − ||x|| / blob_radius))

the "density blob" bias (Magic3D / threestudio style) that starts the optimisation from a soft ball at the
origin instead of empty space. `act` is softplus by default: its gradient is bounded (≤ 1) and it does not
overflow, which keeps early CPU runs in float32 stable; ``"trunc_exp"`` (exp forward, gradient with the exponent
clamped at 15, Instant-NGP style) is available for sharper surfaces. Albedo = sigmoid(logits) in [0,1].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dream3d.encoding import HashGridEncoding
from dream3d.errors import ConfigError
from dream3d.geometry.normals import (NORMAL_TYPES, central_difference_points, density_normals,
                                     forward_difference_points, normals_from_central, normals_from_forward)

DENSITY_ACTIVATIONS = ("softplus", "trunc_exp")


class _TruncExp(torch.autograd.Function):
    """exp(x) whose backward uses exp(min(x, 15)), so a large raw density cannot produce an inf gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with a clamped-exponent gradient (see `_TruncExp`)."""
    return _TruncExp.apply(x)


def _mlp(n_in: int, width: int, n_hidden: int, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_hidden):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(width if n_hidden > 0 else n_in, n_out))
    return nn.Sequential(*layers)


class ImplicitVolume(nn.Module):
    """Density + albedo field (the geometry interface: `bound`, `density`, `albedo`, `forward`, `normals`).

    Args:
        bound: half side of the world box (world units); points are expected inside [-bound, bound]^3 (points
            outside are clamped onto the box for the encoding; the blob term uses the true position).
        n_levels .. per_level_scale, interpolation: hash-grid settings (see dream3d.encoding.HashGridEncoding).
        mlp_width, mlp_layers: hidden width and number of hidden layers of the MLP head.
        density_activation: "softplus" (default) or "trunc_exp".
        blob_density, blob_radius: the density-blob bias (radius in world units); blob_density=0 disables it.
        normal_type: "finite_difference" (central, default), "forward_difference" (3 probes instead of 6) or
            "analytic" (autograd; needs a double-differentiable encoding backend).
        fd_eps: finite-difference step in world units (default 2·bound/256: one cell of a 256³ grid).
        encoding_backend: passed to HashGridEncoding ("auto" picks the fastest available).
    """

    def __init__(self, bound: float = 1.0, n_levels: int = 16, n_features_per_level: int = 2,
                 log2_hashmap_size: int = 19, base_resolution: int = 16,
                 per_level_scale: float = 1.4472692374403782, interpolation: str = "linear",
                 mlp_width: int = 64, mlp_layers: int = 1, density_activation: str = "softplus",
                 blob_density: float = 10.0, blob_radius: float = 0.5,
                 normal_type: str = "finite_difference", fd_eps: float | None = None,
                 encoding_backend: str = "auto") -> None:
        super().__init__()
        if density_activation not in DENSITY_ACTIVATIONS:
            raise ConfigError(f"unknown density_activation {density_activation!r}; expected one of "
                              f"{', '.join(DENSITY_ACTIVATIONS)}")
        if normal_type not in NORMAL_TYPES:
            raise ConfigError(f"unknown normal_type {normal_type!r}; expected one of {', '.join(NORMAL_TYPES)}")
        self.bound = float(bound)
        self.density_activation = density_activation
        self.blob_density = float(blob_density)
        self.blob_radius = float(blob_radius)
        self.normal_type = normal_type
        self.fd_eps = float(fd_eps) if fd_eps is not None else 2.0 * self.bound / 256.0
        self.encoding = HashGridEncoding(n_input_dims=3, n_levels=n_levels, n_features_per_level=n_features_per_level,
                                         log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                                         per_level_scale=per_level_scale, interpolation=interpolation,
                                         backend=encoding_backend)
        self.mlp = _mlp(self.encoding.n_output_dims, mlp_width, mlp_layers, 4)

    # --- internals ---------------------------------------------------------------------------------------------
    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """MLP output (N,4): raw density, 3 albedo logits, for world points x (N,3)."""
        u = ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)
        return self.mlp(self.encoding(u))

    def _activate_density(self, raw_density: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """σ (N,) from the raw density (N,) and world points x (N,3), blob bias included."""
        if self.blob_density != 0.0:
            raw_density = raw_density + self.blob_density * (1.0 - x.norm(dim=-1) / self.blob_radius)
        if self.density_activation == "softplus":
            return F.softplus(raw_density)
        return trunc_exp(raw_density)

    # --- the geometry interface --------------------------------------------------------------------------------
    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density σ (N,) (per world unit) at world points x (N,3)."""
        return self._activate_density(self._raw(x)[:, 0], x)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """Albedo (N,3) in [0,1] at world points x (N,3)."""
        return torch.sigmoid(self._raw(x)[:, 1:4])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(density (N,), albedo (N,3)) at world points x (N,3), from one encoding pass."""
        raw = self._raw(x)
        return self._activate_density(raw[:, 0], x), torch.sigmoid(raw[:, 1:4])

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Unit outward normals (N,3) = −∇σ/|∇σ| at world points x (N,3); differentiable w.r.t. parameters."""
        return density_normals(self.density, x, self.normal_type, self.fd_eps)

    def forward_with_normals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(density (N,), albedo (N,3), normals (N,3)) from one encoding pass over the points and their
        difference probes (7N points central, 4N forward).

        Optional part of the geometry interface: the renderer uses it when present, else forward + normals.
        """
        n = x.shape[0]
        if self.normal_type == "finite_difference":
            probes = central_difference_points(x, self.fd_eps).reshape(6 * n, 3)
        elif self.normal_type == "forward_difference":
            probes = forward_difference_points(x, self.fd_eps).reshape(3 * n, 3)
        else:
            sigma, albedo = self.forward(x)
            return sigma, albedo, self.normals(x)
        pts = torch.cat([x, probes], 0)
        raw = self._raw(pts)
        sigma_all = self._activate_density(raw[:, 0], pts)
        if self.normal_type == "finite_difference":
            normals = normals_from_central(sigma_all[n:].reshape(6, n), self.fd_eps)
        else:
            normals = normals_from_forward(sigma_all[:n], sigma_all[n:].reshape(3, n), self.fd_eps)
        return sigma_all[:n], torch.sigmoid(raw[:n, 1:4]), normals
