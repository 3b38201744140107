"""Backgrounds: a colour per view direction, composited behind the object with weight (1 − opacity)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn


class SolidBackground(nn.Module):
    """One colour everywhere (white by default); `learnable=True` makes the colour a parameter (in logit space)."""

    def __init__(self, color: Sequence[float] = (1.0, 1.0, 1.0), learnable: bool = False) -> None:
        super().__init__()
        c = torch.as_tensor(color, dtype=torch.float32).reshape(3)
        if learnable:
            self.logit = nn.Parameter(torch.logit(c.clamp(1e-3, 1 - 1e-3)))
        else:
            self.register_buffer("color", c)
        self.learnable = learnable

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """dirs (...,3) unit view directions -> rgb (...,3) in [0,1]."""
        c = torch.sigmoid(self.logit) if self.learnable else self.color
        return c.to(dirs.dtype).expand(dirs.shape)


class MLPBackground(nn.Module):
    """A small MLP on the view direction: rgb = sigmoid(MLP([d, sin(2^k π d), cos(2^k π d)]_{k<n_frequencies})).

    An environment "sky" that the optimisation can colour freely (threestudio's neural environment map, with
    Fourier features of the direction instead of spherical harmonics).
    """

    def __init__(self, n_frequencies: int = 2, width: int = 32, n_hidden: int = 2) -> None:
        super().__init__()
        self.n_frequencies = n_frequencies
        n_in = 3 + 6 * n_frequencies
        layers: list[nn.Module] = []
        for i in range(n_hidden):
            layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(width if n_hidden > 0 else n_in, 3))
        self.mlp = nn.Sequential(*layers)

    def encode(self, dirs: torch.Tensor) -> torch.Tensor:
        """Fourier features (...,3+6F) of directions (...,3)."""
        feats = [dirs]
        for k in range(self.n_frequencies):
            a = (2.0**k * math.pi) * dirs
            feats += [torch.sin(a), torch.cos(a)]
        return torch.cat(feats, -1)

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """dirs (...,3) unit view directions -> rgb (...,3) in (0,1)."""
        return torch.sigmoid(self.mlp(self.encode(dirs)))
