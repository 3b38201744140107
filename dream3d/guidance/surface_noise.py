"""Gaussian noise that lives on the object's surface, so every view of a surface patch sees the same noise (CFD).

CFD (Yan, Chen, Wang, ICLR 2025) renders noise defined on the object instead of drawing i.i.d. ε per view. The
reference rasterizes surface points into six axis-aligned noise planes; dream3d uses a CPU-friendly equivalent
built only from render outputs (depth, opacity, cameras):

1. A noise *field*: a table of i.i.d. N(0,1) values (table_size, C), indexed by a spatial hash of the integer
   voxel coordinates ⌊p / voxel⌋ of a 3D point p (hash collisions only merge cells, keeping values N(0,1)).
2. Each noise pixel (the prior's x0 resolution h×w: latent pixels for latent priors) is split into S×S
   sub-pixels. Each sub-pixel's surface point is p = o + d·(depth/opacity) (the expected hit distance along its
   camera ray; depth and opacity are interpolated from the render to (h·S, w·S)).
3. The pixel's surface noise is the sum of the table values of the *distinct* cells its surface sub-pixels hit,
   divided by √count: exactly N(0,1), and identical for two pixels (any views) that cover the same cells.
4. Background: a fixed noise image (C,h,w). A pixel with coverage o (its mean opacity; 0 if no sub-pixel is on
   the surface) gets √o·n_surface + √(1−o)·n_background, which is again exactly N(0,1).

The voxel size should be about twice the sub-pixel footprint (so the sub-pixels of a pixel hit every cell of its
footprint and the covered set depends on the patch, not on where the samples fall) and well below the pixel
footprint (so neighbouring pixels share few cells). voxel_size=None picks 2·footprint/S at the first 3D call from
the median camera FOV and hit distance, then keeps it (it is checkpointed).

Noise re-injection (CFD): n ← √(1−γ)·n + √γ·N(0,1) on the whole field and background, which keeps every value
N(0,1). All random draws use the owner's CPU generator; the field is created lazily on the first call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dream3d.cameras import Cameras, camera_rays
from dream3d.guidance.state import TensorState

# large primes for the spatial hash (as in instant-NGP's hash encoding; the first is 1 so x keeps its low bits)
_PRIMES = (1, 2654435761, 805459861)


def hash_cells(cells: torch.Tensor, table_size: int) -> torch.Tensor:
    """Table indices (...,) int64 for integer cell coordinates cells (...,3): (x·p0 ⊕ y·p1 ⊕ z·p2) mod table_size."""
    c = cells.long()
    h = (c[..., 0] * _PRIMES[0]) ^ (c[..., 1] * _PRIMES[1]) ^ (c[..., 2] * _PRIMES[2])
    return torch.remainder(h, table_size)


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,1,H,W) -> (B,1,*size): identity when equal, bilinear otherwise (antialiased when shrinking)."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    shrink = img.shape[-2] > size[0] or img.shape[-1] > size[1]
    return F.interpolate(img, size, mode="bilinear", align_corners=False, antialias=shrink)


class SurfaceNoise(TensorState):
    """A persistent surface-noise field (see module doc); an `nn.Module` whose state_dict holds "table",
    "background" (once created) and "voxel_size" (once known).

    generator: CPU generator for every draw; subsamples: S; voxel_size: world units (None: automatic);
    table_log2: log2 of the table size; surface_opacity: a sub-pixel is on the surface when its opacity exceeds it.
    """

    def __init__(self, generator: torch.Generator, subsamples: int = 8, voxel_size: float | None = None,
                 table_log2: int = 18, surface_opacity: float = 0.5):
        super().__init__()
        if subsamples < 1:
            raise ValueError(f"subsamples must be >= 1, got {subsamples}")
        self.generator = generator
        self.subsamples = int(subsamples)
        self.voxel_size = float(voxel_size) if voxel_size else None
        self.table_size = 2 ** int(table_log2)
        self.surface_opacity = float(surface_opacity)
        self.table: torch.Tensor | None = None  # (table_size, C) fp32, CPU
        self.background: torch.Tensor | None = None  # (C,h,w) fp32, CPU

    # --- state ------------------------------------------------------------------------------------------------
    def ensure(self, channels: int, height: int, width: int) -> None:
        """Create the field and the background image on first use (C channels, h×w noise pixels)."""
        if self.table is None:
            self.table = torch.randn(self.table_size, channels, generator=self.generator)
            self.background = torch.randn(channels, height, width, generator=self.generator)
        if self.background.shape != (channels, height, width):
            raise ValueError(f"surface noise was created for {tuple(self.background.shape)}, asked for "
                             f"{(channels, height, width)}")

    def reinject(self, gamma: float) -> None:
        """n ← √(1−γ)·n + √γ·N(0,1) on the field and the background (CFD's noise re-injection)."""
        if self.table is None or gamma <= 0.0:
            return
        keep, fresh = math.sqrt(1.0 - gamma), math.sqrt(gamma)
        self.table = keep * self.table + fresh * torch.randn(self.table.shape, generator=self.generator)
        self.background = keep * self.background + fresh * torch.randn(self.background.shape,
                                                                        generator=self.generator)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        if self.table is not None:
            out.update(table=self.table, background=self.background)
        if self.voxel_size is not None:
            out["voxel_size"] = torch.tensor([self.voxel_size], dtype=torch.float64)
        return out

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        if "table" in state:
            self.table = state["table"].detach().to("cpu", torch.float32).clone()
            self.background = state["background"].detach().to("cpu", torch.float32).clone()
        if "voxel_size" in state:
            self.voxel_size = float(state["voxel_size"].reshape(-1)[0])

    # --- sampling ---------------------------------------------------------------------------------------------
    def forward(self, shape: tuple[int, ...], depth: torch.Tensor | None = None,
                 opacity: torch.Tensor | None = None, cameras: Cameras | None = None) -> torch.Tensor:
        """Noise (B,C,h,w) fp32 on the CPU for x0 of `shape` (B,C,h,w).

        depth, opacity: render outputs (B,1,H,W) (depth = Σ w·t, un-normalised); cameras: the B cameras. Without
        them (2D use) every image gets the background image, i.e. one fixed noise image.
        """
        b, c, h, w = shape
        self.ensure(c, h, w)
        bg = self.background.unsqueeze(0).expand(b, -1, -1, -1)
        if depth is None or opacity is None or cameras is None:
            return bg.clone()
        s = self.subsamples
        hs, ws = h * s, w * s
        op = _resize(opacity.detach().float().cpu(), (hs, ws)).clamp(0.0, 1.0)  # (B,1,hs,ws)
        dep = _resize(depth.detach().float().cpu(), (hs, ws))
        cams = cameras.to("cpu")
        origins, dirs = camera_rays(cams, hs, ws)  # (B,hs,ws,3): rays through the sub-pixel centres
        dist = (dep / op.clamp_min(1e-6))[:, 0, :, :, None]  # expected hit distance along each ray
        on_surface = op[:, 0] > self.surface_opacity  # (B,hs,ws)
        if self.voxel_size is None:
            self.voxel_size = self._auto_voxel(cams, dist[..., 0][on_surface], h)
        points = origins + dirs * dist  # surface point of each sub-pixel (world units)
        ids = hash_cells(torch.floor(points / self.voxel_size), self.table_size)  # (B,hs,ws)
        ids = torch.where(on_surface, ids, torch.full_like(ids, -1))
        # group the S×S sub-pixels of each noise pixel: (B,h,w,S²)
        ids = ids.view(b, h, s, w, s).permute(0, 1, 3, 2, 4).reshape(b, h, w, s * s)
        ids, _ = torch.sort(ids, dim=-1)
        first = torch.ones_like(ids, dtype=torch.bool)
        first[..., 1:] = ids[..., 1:] != ids[..., :-1]
        distinct = first & (ids >= 0)  # each covered cell counted once
        count = distinct.sum(-1)  # (B,h,w)
        vals = self.table[ids.clamp_min(0)] * distinct[..., None]  # (B,h,w,S²,C)
        surface = vals.sum(-2) / count.clamp_min(1)[..., None].float().sqrt()  # sum/√count ~ N(0,1)
        coverage = op.view(b, h, s, w, s).mean(dim=(2, 4))  # mean opacity per noise pixel (B,h,w)
        coverage = torch.where(count > 0, coverage, torch.zeros_like(coverage))
        surface = surface.permute(0, 3, 1, 2)  # (B,C,h,w)
        cov = coverage[:, None]
        return cov.sqrt() * surface + (1.0 - cov).sqrt() * bg  # unit variance for every coverage

    def _auto_voxel(self, cams: Cameras, hit: torch.Tensor, h: int) -> float:
        """2·(pixel footprint)/S at the median hit distance (camera distance if nothing is hit) and median FOV."""
        d = float(hit.median()) if hit.numel() else float(cams.distance.median())
        fov = math.radians(float(cams.fov_deg.median()))
        footprint = 2.0 * d * math.tan(0.5 * fov) / h
        return 2.0 * footprint / self.subsamples
