"""Classifier-free guidance (diffusers form) and batched multi-branch ε-prediction."""

from __future__ import annotations

from dataclasses import fields
from typing import Sequence

import torch

from dream3d.cameras import Cameras
from dream3d.priors.protocol import DiffusionPrior


def cfg_combine(eps_u: torch.Tensor, eps_c: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̂_s = ε_u + s·(ε_c − ε_u): s = 1 is the conditional prediction, s = 0 the unconditional one.

    (threestudio's `ε_c + s'(ε_c − ε_u)` is this with s = s' + 1.) Evaluated with `torch.lerp`, which computes
    ε_c − (1 − s)(ε_c − ε_u) for s ≥ 0.5, so s = 1 returns ε_c and s = 0 returns ε_u bit for bit.
    """
    return torch.lerp(eps_u, eps_c, float(scale))


def tile_cameras(cameras: Cameras | torch.Tensor | None, k: int) -> Cameras | torch.Tensor | None:
    """Cameras (or camera features) repeated k times along the batch, in `torch.cat([x]*k)` order."""
    if cameras is None or k == 1:
        return cameras
    if isinstance(cameras, torch.Tensor):
        return torch.cat([cameras] * k)
    return Cameras(*(torch.cat([getattr(cameras, f.name)] * k) for f in fields(Cameras)))


def predict_branches(prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, embs: Sequence[torch.Tensor],
                     cameras: Cameras | torch.Tensor | None = None) -> list[torch.Tensor]:
    """ε-predictions for several conditions in one UNet call with batch k·B.

    x_t: (B,C,h,w); t: (B,) int; embs: k embeddings (B,L,D) (e.g. [cond, uncond]); the same x_t, t and cameras
    go to every branch. Returns k tensors (B,C,h,w) in the order of `embs`.
    """
    k, b = len(embs), x_t.shape[0]
    eps = prior.eps(torch.cat([x_t] * k), t.repeat(k), torch.cat(list(embs)), tile_cameras(cameras, k))
    return list(eps.split(b))
