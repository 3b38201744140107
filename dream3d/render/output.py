"""What every renderer returns: images of one batch of cameras."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOut:
    """A render of B cameras at H x W.

    rgb: (B,3,H,W) in [0,1], composited over the background. opacity: (B,1,H,W) in [0,1].
    depth: (B,1,H,W) world units, Σ w·t (0 where empty; depth / opacity is the expected hit distance).
    normal: (B,3,H,W) world-space normals in [-1,1] (opacity-weighted), when the shading or the caller needed them.
    orient: (B,1,H,W) DreamFusion's orientation penalty per pixel (volume renderer with normals), else None.
    regularizer: scalar tensor, the renderer's own weighted regularisers (the mesh stage's), else None.
    n_samples: geometry queries of a volume render; n_faces: faces of a rasterized mesh (0 when not a mesh).
    """

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor | None = None
    orient: torch.Tensor | None = None
    regularizer: torch.Tensor | None = None
    n_samples: int = 0
    n_faces: int = 0
