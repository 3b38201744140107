"""Pure-torch reference of tcnn's hash-grid encoding (the `torch` backend).

Differentiable by autograd with respect to both the parameters and the inputs (also twice). Levels are
processed one after another, so the transient memory is O(N · 2^D) per level rather than per grid.
"""

from __future__ import annotations

import torch

from .levels import HASH_PRIMES, MASK32, LevelInfo

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _corner_bits(n_dims: int, device: torch.device) -> torch.Tensor:
    """(2^D, D) int64: bit d of corner k, i.e. 0 = lower and 1 = upper vertex along dimension d."""
    k = torch.arange(2**n_dims, device=device)
    return (k[:, None] >> torch.arange(n_dims, device=device)[None, :]) & 1


def grid_positions(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell and fractional position of `x` in one level.

    x: (N, D) float. Returns cell (N, D) int64 (saturated to the int32 range, as CUDA's float->int does) and
    frac (N, D) in [0, 1), differentiable w.r.t. x. For float32 x, `pos = scale·x + 0.5` is formed in float64
    from the float32 operands and rounded once to float32, which equals tcnn's `fmaf(scale, x, 0.5f)` and frac is
    float32. For float64 x (tests: finite differences) everything stays in float64.
    """
    pos = x.to(torch.float64) * scale + 0.5
    if x.dtype != torch.float64:
        pos = pos.to(torch.float32)
    floor = torch.floor(pos.detach())
    frac = pos - floor
    cell = torch.nan_to_num(floor.to(torch.float64), nan=0.0).clamp(_INT32_MIN, _INT32_MAX).to(torch.int64)
    return cell, frac


def corner_index(corners: torch.Tensor, level: LevelInfo) -> torch.Tensor:
    """Row of each corner inside its level's table, in tcnn's uint32 arithmetic (done in int64 and masked).

    corners: (..., D) int64 grid coordinates in [-2^31, 2^31]. Returns (...) int64 in [0, entries).
    """
    n_dims = corners.shape[-1]
    if level.dense:
        index = torch.zeros(corners.shape[:-1], dtype=torch.int64, device=corners.device)
        stride = 1
        for d in range(n_dims):
            index = (index + corners[..., d] * stride) & MASK32
            stride *= level.resolution
    else:
        index = torch.zeros(corners.shape[:-1], dtype=torch.int64, device=corners.device)
        for d in range(n_dims):
            # |c| <= 2^31 and prime < 2^32: the product fits int64; the mask keeps the low 32 bits.
            index = index ^ ((corners[..., d] * HASH_PRIMES[d]) & MASK32)
    return index % level.entries


def smoothstep(f: torch.Tensor) -> torch.Tensor:
    """f²(3 − 2f), derivative 6f(1 − f)."""
    return f * f * (3.0 - 2.0 * f)


def hashgrid_torch(
    x: torch.Tensor,
    params: torch.Tensor,
    levels: list[LevelInfo],
    n_features: int,
    interpolation: str = "linear",
) -> torch.Tensor:
    """Encode points with the hash grid.

    x: (N, D) float, nominally in [0, 1] (not clamped). params: (Σ entries · F,) flat table in tcnn's layout.
    Returns (N, L·F) level-major (`out[:, l·F + f]`): float32, or float64 when x is float64 (then the table
    values are used in float64 too, giving the exact multilinear function for finite-difference checks).
    """
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    n_points, n_dims = x.shape
    table = params.view(-1, n_features)
    bits = _corner_bits(n_dims, x.device)  # (K, D), K = 2^D
    upper = bits.bool()[None]  # (1, K, D)
    outputs = []
    for level in levels:
        cell, frac = grid_positions(x, level.scale)
        w1 = smoothstep(frac) if interpolation == "smoothstep" else frac
        w_dim = torch.where(upper, w1[:, None, :], 1.0 - w1[:, None, :])  # (N, K, D)
        weight = w_dim[..., 0]
        for d in range(1, n_dims):
            weight = weight * w_dim[..., d]  # (N, K)
        index = corner_index(cell[:, None, :] + bits[None], level) + level.offset  # (N, K)
        feats = table[index].to(out_dtype)  # (N, K, F)
        outputs.append((weight[..., None] * feats).sum(dim=1))
    return torch.cat(outputs, dim=1) if outputs else x.new_zeros(n_points, 0, dtype=out_dtype)
