"""Occupancy grid for empty-space skipping (pure torch; same layout and update rule as nerfacc's OccGridEstimator).

A resolution^3 grid over the box [-bound, bound]^3, indexed [x, y, z]: cell (i, j, k) covers
[-bound + i·s, -bound + (i+1)·s] × ... with s = 2·bound / resolution (nerfacc's `binaries[0]` for
`roi_aabb = (-b,-b,-b, b,b,b)`, `levels = 1`, so one grid serves both ray marchers).

State (buffers, in state_dict so a resumed run is exact):
    occs      (R^3,) float  EMA of the max occupancy value seen per cell (the value is what `occ_eval_fn`
                            returns; the renderer uses σ·step_size, i.e. ≈ the opacity of one ray step)
    occupied  (R,R,R) bool  occs > min(mean(occs), threshold); all True at init so the first renders see the
                            whole box (the density blob renders before the first update).

Update (every `update_every` steps): evaluate one uniformly random point in each chosen cell — every cell
during warm-up, afterwards R^3/4 uniformly drawn cells plus up to R^3/4 drawn among the occupied ones — and set
occs[c] = max(decay · occs[c], value). Random draws come from the given torch.Generator (deterministic).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0,1) numbers drawn on the generator's device, returned on `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(high, (n,), generator=generator, device=gen_device).to(device)


class OccupancyGrid(nn.Module):
    """Binary occupancy over the world box with an EMA update (see the module docstring)."""

    def __init__(self, bound: float = 1.0, resolution: int = 32, ema_decay: float = 0.95, threshold: float = 0.01,
                 warmup_steps: int = 256, update_every: int = 16, eval_chunk: int = 65536) -> None:
        super().__init__()
        self.bound, self.resolution = float(bound), int(resolution)
        self.ema_decay, self.threshold = float(ema_decay), float(threshold)
        self.warmup_steps, self.update_every, self.eval_chunk = int(warmup_steps), int(update_every), int(eval_chunk)
        r = self.resolution
        self.register_buffer("occs", torch.zeros(r**3))
        self.register_buffer("occupied", torch.ones(r, r, r, dtype=torch.bool))

    @property
    def n_cells(self) -> int:
        return self.resolution**3

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        """Flat cell index (...,) (x-major, as `occupied.flatten()`) of world points x (...,3), clamped to the grid."""
        r = self.resolution
        ijk = ((x + self.bound) * (r / (2.0 * self.bound))).floor().long().clamp_(0, r - 1)
        return (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]

    def is_occupied(self, x: torch.Tensor) -> torch.Tensor:
        """Occupancy (...,) bool of the cells holding world points x (...,3)."""
        return self.occupied.reshape(-1)[self.cell_index(x)]

    def cell_points(self, cells: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One uniformly random world point (N,3) inside each of the flat cell indices `cells` (N,)."""
        r = self.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).to(self.occs.dtype)
        u = (ijk + _rand((cells.shape[0], 3), generator, cells.device)) / r
        return -self.bound + 2.0 * self.bound * u

    @torch.no_grad()
    def update(self, step: int, occ_eval_fn: Callable[[torch.Tensor], torch.Tensor],
               generator: torch.Generator | None = None) -> bool:
        """EMA update if `step % update_every == 0`; returns whether it ran.

        occ_eval_fn: world points (N,3) -> occupancy values (N,) (the renderer passes σ·step_size).
        """
        if step % self.update_every != 0:
            return False
        device = self.occs.device
        if step < self.warmup_steps:
            cells = torch.arange(self.n_cells, device=device)
        else:
            n = self.n_cells // 4
            uniform = _randint(self.n_cells, n, generator, device)
            occupied = torch.nonzero(self.occupied.reshape(-1))[:, 0]
            if occupied.shape[0] > n:
                occupied = occupied[_randint(occupied.shape[0], n, generator, device)]
            cells = torch.cat([uniform, occupied])
        self._ema_update(cells, occ_eval_fn, generator)
        return True

    @torch.no_grad()
    def _ema_update(self, cells: torch.Tensor, occ_eval_fn: Callable[[torch.Tensor], torch.Tensor],
                    generator: torch.Generator | None) -> None:
        pts = self.cell_points(cells, generator)
        values = torch.cat([occ_eval_fn(c).reshape(-1).to(self.occs.dtype) for c in pts.split(self.eval_chunk)])
        occs = self.occs.clone()
        touched = torch.zeros_like(self.occupied).reshape(-1)
        touched[cells] = True
        occs[touched] *= self.ema_decay
        # scatter-max handles cells drawn twice deterministically (max over all their samples)
        occs.scatter_reduce_(0, cells, values, reduce="amax", include_self=True)
        self.occs.copy_(occs)
        thre = torch.clamp(occs[occs >= 0].mean(), max=self.threshold)
        self.occupied.copy_((occs > thre).reshape(self.occupied.shape))
