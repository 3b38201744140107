"""Pure-torch ray marching with empty-space skipping, and alpha compositing (any device).

Sample placement follows nerfacc's `traverse_grids` with a constant step (cone_angle = 0), so the torch and
nerfacc marchers produce the same samples for the same grid and jitter:

    interval k of a ray = [a + k·dt, a + (k+1)·dt], midpoint m_k = a + (k + ½)·dt,  k = 0, 1, ...
    a = near_plane + jitter (jitter ∈ [0, dt) per ray in training, 0 in eval)
    a sample is kept iff t_in ≤ m_k < t_out (the ray's span inside the box) and the cell holding the point at
    m_k is occupied.

Compositing: α_k = 1 − exp(−σ_k·dt), T_k = exp(−Σ_{j<k} σ_j·dt), w_k = T_k·α_k (skipped samples have σ = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.render.occupancy import OccupancyGrid


@dataclass
class PackedSamples:
    """Samples kept by the marcher, packed: ray-major, increasing t within a ray.

    ray (M,) long ray index; col (M,) long column in the ray's dense row of `n_cols` lattice slots;
    t_mid (M,) sample distance along the (unit) ray direction, world units.
    """

    ray: torch.Tensor
    col: torch.Tensor
    t_mid: torch.Tensor
    n_rays: int
    n_cols: int

    def select(self, keep: torch.Tensor) -> "PackedSamples":
        """The samples where keep (M,) bool is True (order preserved)."""
        return PackedSamples(self.ray[keep], self.col[keep], self.t_mid[keep], self.n_rays, self.n_cols)


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """Slab intersection of rays (N,3),(N,3) with [-bound, bound]^3: t_in (N,), t_out (N,), hit (N,) bool.

    t_in may be negative (origin inside the box); hit means the ray's forward half meets the box.
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    inv = 1.0 / safe
    t0 = (-bound - origins) * inv
    t1 = (bound - origins) * inv
    t_in = torch.minimum(t0, t1).amax(-1)
    t_out = torch.maximum(t0, t1).amin(-1)
    return t_in, t_out, (t_out > t_in) & (t_out > 0)


def march(origins: torch.Tensor, dirs: torch.Tensor, bound: float, step: float,
          grid: OccupancyGrid | None = None, jitter: torch.Tensor | None = None,
          near_plane: float = 0.0) -> PackedSamples:
    """Place samples on the ray lattice (module docstring) and keep those in occupied cells.

    origins, dirs (N,3) (dirs unit length); step: dt in world units; grid: None samples every lattice point in
    the box; jitter (N,) in [0, dt) or None.
    """
    n = origins.shape[0]
    t_in, t_out, hit = ray_aabb(origins, dirs, bound)
    a = torch.full_like(t_in, near_plane) if jitter is None else near_plane + jitter
    k0 = torch.ceil((t_in - a) / step - 0.5).clamp_min(0)
    k_end = torch.ceil((t_out - a) / step - 0.5)
    count = torch.where(hit, (k_end - k0).clamp_min(0), torch.zeros_like(k0))
    n_cols = int(count.max().item()) + 1 if n > 0 else 0  # +1 slot absorbs rounding at the ends
    if n_cols <= 1:
        empty = torch.zeros(0, dtype=torch.long, device=origins.device)
        return PackedSamples(empty, empty, origins.new_zeros(0), n, max(n_cols, 1))
    j = torch.arange(n_cols, device=origins.device, dtype=origins.dtype)
    t_mid = a[:, None] + (k0[:, None] + j + 0.5) * step  # (N,K)
    keep = hit[:, None] & (t_mid >= t_in[:, None]) & (t_mid < t_out[:, None])
    if grid is not None:
        pts = origins[:, None, :] + t_mid[..., None] * dirs[:, None, :]
        keep &= grid.is_occupied(pts)
    ray, col = torch.nonzero(keep, as_tuple=True)
    return PackedSamples(ray, col, t_mid[ray, col], n, n_cols)


def composite_weights(sigma: torch.Tensor, samples: PackedSamples, step: float) -> torch.Tensor:
    """Rendering weights w (M,) of packed densities sigma (M,) (differentiable w.r.t. sigma).

    Dense per-ray rows (N, n_cols) keep the transmittance's cumulative sums short and exact in float32.
    """
    n, k = samples.n_rays, samples.n_cols
    flat = samples.ray * k + samples.col
    sdt = torch.zeros(n * k, dtype=sigma.dtype, device=sigma.device).index_put((flat,), sigma * step).view(n, k)
    trans = torch.exp(-(torch.cumsum(sdt, 1) - sdt))
    alpha = 1.0 - torch.exp(-sdt)
    return (trans * alpha).view(-1)[flat]


@torch.no_grad()
def visibility(sigma: torch.Tensor, samples: PackedSamples, step: float, early_stop_eps: float,
               alpha_thre: float) -> torch.Tensor:
    """nerfacc's `render_visibility_from_density` rule: keep (M,) = T ≥ early_stop_eps and α ≥ alpha_thre.

    Dropping T < eps removes a suffix of each ray (T only decreases), so the kept samples' weights are unchanged.
    """
    n, k = samples.n_rays, samples.n_cols
    flat = samples.ray * k + samples.col
    sdt = torch.zeros(n * k, dtype=sigma.dtype, device=sigma.device).index_put((flat,), sigma * step).view(n, k)
    trans = torch.exp(-(torch.cumsum(sdt, 1) - sdt)).view(-1)[flat]
    keep = trans >= early_stop_eps
    if alpha_thre > 0:
        keep &= (1.0 - torch.exp(-sigma * step)) >= alpha_thre
    return keep


def accumulate(weights: torch.Tensor, values: torch.Tensor | None, ray: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Σ_k w_k·v_k per ray: (n_rays, D) from weights (M,) and values (M,D) (values None: Σ w, shape (n_rays,1))."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros(n_rays, src.shape[1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray, src)
