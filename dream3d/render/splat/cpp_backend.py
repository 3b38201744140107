"""The C++/OpenMP tile compositor (extensions/splat/) as a differentiable torch function."""

from __future__ import annotations

import torch


def available() -> bool:
    """True when the C++ kernel is built and loaded."""
    return False


def composite(means2d: torch.Tensor, conics: torch.Tensor, depths: torch.Tensor, opacities: torch.Tensor,
              features: torch.Tensor, rects: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same inputs and outputs as `reference.composite_reference`."""
    raise NotImplementedError
