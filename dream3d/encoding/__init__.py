"""Multiresolution hash-grid encoding (tiny-cuda-nn's definition) with cpp / cuda / tcnn / torch backends."""

from .backends import BACKENDS, resolve_backend
from .levels import HASH_PRIMES, LevelInfo, hash_coords, level_table, n_params, per_level_scale_for
from .module import HashGridEncoding
from .reference import hashgrid_torch

__all__ = [
    "BACKENDS",
    "HASH_PRIMES",
    "HashGridEncoding",
    "LevelInfo",
    "hash_coords",
    "hashgrid_torch",
    "level_table",
    "n_params",
    "per_level_scale_for",
    "resolve_backend",
]
