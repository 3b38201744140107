"""The interface renderers and exporters see of a 3D representation."""

from __future__ import annotations

from typing import Protocol

import torch


class Geometry(Protocol):
    """A 3D representation inside [-bound, bound]^3 (an `nn.Module`): the NeRF's `ImplicitVolume`, the mesh
    stage's `DMTetGeometry`. points: (N,3) world coordinates."""

    bound: float

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """(N,3) base colour in [0,1] at `points`."""

