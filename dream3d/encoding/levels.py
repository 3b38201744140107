"""Level geometry of tiny-cuda-nn's multiresolution hash grid, computed exactly as tcnn does on the host.

Everything here is plain Python/numpy on small numbers; all backends read their per-level constants from
`level_table` so they agree bit for bit on scales, resolutions, table sizes and offsets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

# tcnn's `coherent_prime_hash` factors, one per input dimension (the first is 1: dimension 0 is not mixed).
HASH_PRIMES: tuple[int, ...] = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
MASK32 = 0xFFFFFFFF
_MAX_PARAMS = (2**32 - 1) // 2  # tcnn caps a level's dense size at uint32 max / 2 before alignment


def f32(v: float) -> float:
    """Round a Python float to the nearest float32 value."""
    return struct.unpack("f", struct.pack("f", v))[0]


@lru_cache(maxsize=1)
def _float_math() -> tuple[Callable[[float], float], Callable[[float], float]]:
    """(exp2f, log2f): the C library's float functions (what tcnn's host code calls), else torch's float32 ops."""
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        exp2f, log2f = libm.exp2f, libm.log2f
        for fn in (exp2f, log2f):
            fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
        return exp2f, log2f
    except (OSError, AttributeError):
        import torch

        def via_torch(op: Callable) -> Callable[[float], float]:
            return lambda v: float(op(torch.tensor(v, dtype=torch.float32)))

        return via_torch(torch.exp2), via_torch(torch.log2)


@dataclass(frozen=True)
class LevelInfo:
    """One level of the grid.

    scale:      float32 value `exp2f(l·log2f(b))·N_min − 1` (stored as a Python float, exactly representable).
    resolution: `ceil(scale) + 1` vertices per axis.
    entries:    table rows in this level (`res^D` rounded up to 8, capped at 2^T).
    offset:     first row of this level in the flat table (rows, not floats).
    dense:      True when `res^D <= entries` (direct indexing), False when hashed.
    """

    level: int
    scale: float
    resolution: int
    entries: int
    offset: int
    dense: bool


def level_table(
    n_input_dims: int = 3,
    n_levels: int = 16,
    log2_hashmap_size: int = 19,
    base_resolution: int = 16,
    per_level_scale: float = 1.4472692374403782,
) -> list[LevelInfo]:
    """Per-level scale, resolution, table size, offset and indexing mode, in tcnn's float32 host arithmetic."""
    if not 1 <= n_input_dims <= len(HASH_PRIMES):
        raise ValueError(f"n_input_dims must be in 1..{len(HASH_PRIMES)}, got {n_input_dims}")
    if n_levels < 1 or not 1 <= log2_hashmap_size <= 31:
        raise ValueError("n_levels must be >= 1 and log2_hashmap_size in 1..31")
    exp2f, log2f = _float_math()
    log2_b = f32(log2f(f32(per_level_scale)))
    table: list[LevelInfo] = []
    offset = 0
    for level in range(n_levels):
        # every step rounded to float32 (products of two float32 values are exact in double before rounding)
        scale = f32(f32(f32(exp2f(f32(level * log2_b))) * base_resolution) - 1.0)
        res = math.ceil(scale) + 1
        dense_size = res**n_input_dims
        entries = _MAX_PARAMS if float(res) ** n_input_dims > _MAX_PARAMS else dense_size
        entries = (entries + 7) // 8 * 8  # aligned like tcnn
        entries = min(entries, 2**log2_hashmap_size)
        table.append(LevelInfo(level, scale, res, entries, offset, dense_size <= entries))
        offset += entries
    return table


def n_params(levels: list[LevelInfo], n_features_per_level: int) -> int:
    """Total number of scalar parameters: Σ entries_l · F."""
    return sum(lv.entries for lv in levels) * n_features_per_level


def hash_coords(coords: tuple[int, ...] | list[int]) -> int:
    """tcnn's spatial hash of integer grid coordinates, before `mod entries`: XOR_d (c_d·π_d) mod 2^32."""
    h = 0
    for c, prime in zip(coords, HASH_PRIMES):
        h ^= ((c & MASK32) * prime) & MASK32
    return h


def per_level_scale_for(base_resolution: int, max_resolution: int, n_levels: int) -> float:
    """b = exp((ln N_max − ln N_min)/(L − 1)), the growth factor that reaches `max_resolution` at the last level."""
    if n_levels < 2:
        return 1.0
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
