"""nerfacc 0.5.x marcher (CUDA only), on the same occupancy grid and sample lattice as the torch marcher.

nerfacc is imported lazily (it JIT-builds a CUDA extension on first use). Sampling goes through
`OccGridEstimator.sampling` with the estimator's `binaries` pointed at our grid's `occupied` tensor (same
[x,y,z] layout over the same box); the per-ray jitter enters as `t_min` (nerfacc starts the lattice at
max(near_plane, t_min)), so a given jitter gives the torch marcher's samples. Weights come from
`nerfacc.render_weight_from_density`.
"""

from __future__ import annotations

from typing import Callable

import torch

from dream3d.render.marching import PackedSamples
from dream3d.render.occupancy import OccupancyGrid


def nerfacc_available() -> bool:
    """True when nerfacc imports and its CUDA extension loads (builds it the first time; minutes)."""
    if not torch.cuda.is_available():
        return False
    try:
        from nerfacc.cuda._backend import _C  # noqa: PLC0415 (lazy optional import)
    except Exception:  # any failure to import or build means "not available"
        return False
    return _C is not None


class NerfaccMarcher:
    """Holds one nerfacc OccGridEstimator per device (not a submodule: the grid state lives in OccupancyGrid)."""

    def __init__(self) -> None:
        self._estimators: dict[torch.device, object] = {}

    def _estimator(self, grid: OccupancyGrid, device: torch.device):
        from nerfacc import OccGridEstimator

        est = self._estimators.get(device)
        if est is None or int(est.resolution[0]) != grid.resolution:
            b = grid.bound
            est = OccGridEstimator(roi_aabb=[-b, -b, -b, b, b, b], resolution=grid.resolution, levels=1).to(device)
            self._estimators[device] = est
        est.binaries = grid.occupied.reshape(1, *grid.occupied.shape)  # share our grid, no copy
        est.occs = grid.occs  # nerfacc caps alpha_thre at occs.mean()
        return est

    @torch.no_grad()
    def march(self, origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid, step: float,
              jitter: torch.Tensor | None, near_plane: float, use_grid: bool,
              density_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, early_stop_eps: float = 0.0,
              alpha_thre: float = 0.0) -> tuple[PackedSamples, tuple[torch.Tensor, torch.Tensor]]:
        """Packed samples (ray, t_mid; col unused) and their intervals (t_starts (M,), t_ends (M,)).

        density_fn (world points (N,3) -> σ (N,)), when given with early_stop_eps or alpha_thre > 0, drops
        invisible samples (nerfacc's sigma_fn pruning; the torch path applies `marching.visibility`).
        """
        est = self._estimator(grid, origins.device)
        if not use_grid:
            est.binaries = torch.ones_like(est.binaries)
        t_min = None if jitter is None else near_plane + jitter
        sigma_fn = None
        if density_fn is not None:
            def sigma_fn(t_starts, t_ends, ray_indices):
                ray_indices = ray_indices.long()
                t = 0.5 * (t_starts + t_ends)[:, None]
                return density_fn(origins[ray_indices] + t * dirs[ray_indices])

        ray, t_starts, t_ends = est.sampling(origins.contiguous(), dirs.contiguous(), sigma_fn=sigma_fn,
                                             near_plane=near_plane, t_min=t_min, render_step_size=step,
                                             early_stop_eps=early_stop_eps, alpha_thre=alpha_thre,
                                             stratified=False, cone_angle=0.0)
        ray = ray.long()
        t_mid = 0.5 * (t_starts + t_ends)
        return PackedSamples(ray, torch.zeros_like(ray), t_mid, origins.shape[0], 0), (t_starts, t_ends)

    @staticmethod
    def weights(sigma: torch.Tensor, samples: PackedSamples,
                intervals: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Rendering weights (M,) from nerfacc's packed transmittance (differentiable w.r.t. sigma)."""
        import nerfacc

        t_starts, t_ends = intervals
        w, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigma, ray_indices=samples.ray,
                                                     n_rays=samples.n_rays)
        return w
