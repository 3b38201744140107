"""Chunked, gradient-free queries of a geometry's fields (the only way the exporter touches the geometry).

The exporter needs nothing but the geometry interface's `bound`, `density(x (N,3)) -> (N,)` and
`albedo(x (N,3)) -> (N,3)`; it never loads a diffusion prior. Queries run under `torch.no_grad()` on the
geometry's own device, in chunks so that a hash grid on a small GPU (or a CPU) is not asked for millions of
points at once, and come back as float32 CPU tensors.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from dream3d.errors import Dream3DError

DEFAULT_CHUNK = 1 << 18  # points per query


def geometry_device(geometry: object) -> torch.device:
    """The device of the geometry's first parameter or buffer (CPU for a geometry that has neither)."""
    if isinstance(geometry, torch.nn.Module):
        for t in geometry.parameters():
            return t.device
        for t in geometry.buffers():
            return t.device
    return torch.device("cpu")


def geometry_bound(geometry: object) -> float:
    """The half side of the geometry's world box, checked to be a positive finite number."""
    bound = float(getattr(geometry, "bound", 1.0))
    if not np.isfinite(bound) or bound <= 0:
        raise Dream3DError(f"cannot export: the geometry's bound must be a positive number, got {bound}")
    return bound


def query(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor | np.ndarray,
          device: torch.device | str = "cpu", chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Evaluate a field `fn` at points (N,3) in chunks; returns float32 CPU values (N,) or (N,C).

    Points are sent to `device` as float32. Raises `Dream3DError` if the field returns non-finite values.
    """
    pts = torch.as_tensor(points, dtype=torch.float32)
    outs = []
    with torch.no_grad():
        for start in range(0, pts.shape[0], chunk):
            out = fn(pts[start:start + chunk].to(device))
            outs.append(out.detach().float().cpu())
    if not outs:
        return torch.zeros(0)
    values = torch.cat(outs, 0)
    if not torch.isfinite(values).all():
        name = getattr(fn, "__name__", "field")
        raise Dream3DError(f"cannot export: the geometry's {name} field returned non-finite values (NaN or inf)")
    return values
