"""Pixel coverage of 2-D triangles: the primitive shared by the rasterizer and the mesh voxelizer."""

from __future__ import annotations

import torch


def edge_function(a: torch.Tensor, b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of (a, b, q), (...,2) each -> (...)."""
    return (b[..., 0] - a[..., 0]) * (q[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (q[..., 0] - a[..., 0])


@torch.no_grad()
def covered_pixels(tri: torch.Tensor, valid: torch.Tensor, height: int, width: int, max_pairs: int = 1 << 20):
    """Pixel centres inside 2-D triangles, enumerated from each triangle's bounding box in bounded chunks.

    tri (F,3,2) pixel coordinates (centres at +½), valid (F,) bool. Yields, per chunk of whole triangles with
    at most `max_pairs` candidate pixels, (face (N,), px (N,), py (N,), screen barycentrics (N,3)) of the
    covered (face, pixel) pairs (edges inclusive).
    """
    area2 = edge_function(tri[:, 0], tri[:, 1], tri[:, 2])
    valid = valid & (area2.abs() > 1e-12) & torch.isfinite(tri).all(2).all(1)
    lo = torch.ceil(tri.amin(1) - 0.5).clamp_min(0)
    hi = torch.minimum(torch.floor(tri.amax(1) - 0.5),
                       torch.tensor([width - 1, height - 1], device=tri.device, dtype=tri.dtype))
    n = (hi - lo + 1).clamp_min(0)
    count = (n[:, 0] * n[:, 1]).long() * valid
    fsel = count.nonzero().squeeze(1)
    if fsel.numel() == 0:
        return
    cnt = count[fsel]
    csum = torch.cumsum(cnt, 0)
    start = 0
    while start < fsel.shape[0]:
        base = csum[start - 1] if start > 0 else csum.new_zeros(())
        stop = max(int(torch.searchsorted(csum, base + max_pairs, right=True)), start + 1)
        f, c = fsel[start:stop], cnt[start:stop]
        fr = torch.repeat_interleave(f, c)
        first = torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
        off = torch.arange(fr.shape[0], device=tri.device) - first
        nx = n[fr, 0].long()
        px = lo[fr, 0].long() + off % nx
        py = lo[fr, 1].long() + off // nx
        q = torch.stack([px, py], -1).to(tri.dtype) + 0.5
        t, a = tri[fr], area2[fr]
        b0, b1 = edge_function(t[:, 1], t[:, 2], q) / a, edge_function(t[:, 2], t[:, 0], q) / a
        b = torch.stack([b0, b1, 1.0 - b0 - b1], -1)
        inside = (b >= 0).all(1)
        yield fr[inside], px[inside], py[inside], b[inside]
        start = stop
