"""The pure-torch compositor: dense (every pixel against every visible splat), slow and obviously correct.

For each pixel, the splats of its tile are taken front to back by camera-space depth (ties by index), and
alpha_i = min(ALPHA_MAX, opacity_i exp(-0.5 d^T conic_i d)) with d the pixel centre minus the splat centre; a splat
is skipped where alpha_i < ALPHA_MIN, and compositing stops at the first splat after which the transmittance would
fall below T_MIN (that splat and all behind it are left out). These rules are written as masks, so autograd
gives the exact gradient of the function the fast kernels compute. Pixels are processed in chunks under activation
checkpointing, so memory stays bounded by one chunk's pixels x splats.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from dream3d.render.splat.projection import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE_SIZE

CHUNK_ELEMENTS: int = 1 << 22  # pixels x splats per chunk (a few tensors of this many floats at a time)


def _composite_chunk(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor, features: torch.Tensor,
                     in_tile: torch.Tensor, pix: torch.Tensor, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite n depth-sorted splats at P pixels: features (P,K) and alpha (P,1).

    means2d (n,2), conics (n,3), opacities (n,), features (n,K); in_tile (n_tiles, n) bool: which splats each tile
    composites; pix (P,2) pixel centres, tiles (P,) the index of their tile.
    """
    if means2d.shape[0] == 0:
        return features.new_zeros(pix.shape[0], features.shape[1]), features.new_zeros(pix.shape[0], 1)
    dx = pix[:, None, 0] - means2d[None, :, 0]  # (P,n)
    dy = pix[:, None, 1] - means2d[None, :, 1]
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities * torch.exp(-sigma), max=ALPHA_MAX)
    alpha = torch.where(in_tile[tiles] & (sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    # the transmittance after each splat if every earlier one contributed; it only falls, so the first splat that
    # would take it below T_MIN and all after it are the ones left out
    alpha = torch.where(torch.cumprod(1.0 - alpha, dim=1) >= T_MIN, alpha, torch.zeros_like(alpha))
    transmittance = torch.cumprod(1.0 - alpha, dim=1)
    before = torch.cat([torch.ones_like(transmittance[:, :1]), transmittance[:, :-1]], 1)
    weights = alpha * before
    return weights @ features, 1.0 - transmittance[:, -1:]


def composite_reference(means2d: torch.Tensor, conics: torch.Tensor, depths: torch.Tensor, opacities: torch.Tensor,
                        features: torch.Tensor, rects: torch.Tensor, width: int,
                        height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back composite of C cameras' splats: features (C,H,W,K) and alpha (C,H,W,1).

    means2d (C,N,2), conics (C,N,3), depths (C,N) (the sort key), opacities (N,), features (C,N,K),
    rects (C,N,4) from `projection.tile_rects` (empty for culled splats).
    """
    n_cams, _, k = features.shape
    device, dtype = features.device, features.dtype
    jj, ii = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    pix_all = torch.stack([ii.reshape(-1), jj.reshape(-1)], -1)
    centres_all = pix_all.to(dtype) + 0.5
    tiles_xy = torch.div(pix_all, TILE_SIZE, rounding_mode="floor")
    tiles_x = -(-width // TILE_SIZE)
    tiles_all = tiles_xy[:, 1] * tiles_x + tiles_xy[:, 0]  # (H*W,) tile index, row-major
    tile_grid = torch.stack(torch.meshgrid(torch.arange(-(-height // TILE_SIZE), device=device),
                                           torch.arange(tiles_x, device=device), indexing="ij"), -1).reshape(-1, 2)
    differentiable = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities, features))
    images, alphas = [], []
    for cam in range(n_cams):
        rect = rects[cam]
        visible = torch.nonzero((rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1]))[:, 0]
        order = visible[torch.argsort(depths[cam, visible].detach(), stable=True)]
        r = rect[order]
        ty, tx = tile_grid[:, None, 0], tile_grid[:, None, 1]
        in_tile = (tx >= r[:, 0]) & (tx < r[:, 2]) & (ty >= r[:, 1]) & (ty < r[:, 3])  # (n_tiles, n)
        args = (means2d[cam, order], conics[cam, order], opacities[order], features[cam, order], in_tile)
        chunk = max(1, CHUNK_ELEMENTS // max(1, len(order)))
        img, alp = [], []
        for start in range(0, height * width, chunk):
            pix, tiles = centres_all[start:start + chunk], tiles_all[start:start + chunk]
            if differentiable:
                f, a = checkpoint(_composite_chunk, *args, pix, tiles, use_reentrant=False)
            else:
                f, a = _composite_chunk(*args, pix, tiles)
            img.append(f)
            alp.append(a)
        images.append(torch.cat(img).reshape(height, width, k))
        alphas.append(torch.cat(alp).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas)
