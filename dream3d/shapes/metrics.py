"""Scores against the shapes world's ground truth: image classification (for the prior) and 3D metrics.

Image scoring: a sample's foreground is every pixel visibly different from the white background; its color is
the nearest named color to the median foreground color (references: mean foreground color of ground-truth renders);
its shape is the one whose ground-truth silhouette matches best (IoU). When the sample's camera is known (the
bundled prior is camera-conditioned) the ground truth is rendered from that camera; otherwise the best IoU over a
grid of views is used. The grid alone is ambiguous (a cube seen from one view has a cylinder's silhouette from
another; 93% accuracy on ground-truth renders against 100% with the own camera), hence the own camera when known.
"""

from __future__ import annotations

import functools

import torch

from dream3d.cameras import Cameras, make_cameras, sample_cameras
from dream3d.shapes.primitives import COLORS, SHAPES, grid_points, sdf
from dream3d.shapes.render import render_shapes

FOREGROUND_THRESHOLD = 0.12  # max channel difference from white


def foreground_mask(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> (B,H,W) bool: pixels that are not background white."""
    return (1.0 - rgb).amax(dim=1) > FOREGROUND_THRESHOLD


@functools.lru_cache(maxsize=4)
def reference_colors(resolution: int = 32) -> torch.Tensor:
    """(n_colors,3): mean foreground color of each named color over ground-truth renders of every shape."""
    shapes, names = list(SHAPES), list(COLORS)
    refs = []
    gen = torch.Generator().manual_seed(1234)
    for c in names:
        cams = sample_cameras(4 * len(shapes), generator=gen)
        rgb, mask = render_shapes(shapes * 4, [c] * len(cams), cams, resolution)
        m = mask[:, 0] > 0.99
        refs.append(rgb.permute(0, 2, 3, 1)[m].median(dim=0).values)
    return torch.stack(refs)


def classify_color(rgb: torch.Tensor) -> list[str | None]:
    """Nearest named color of each image's median foreground color (None when there is no foreground)."""
    refs, names = reference_colors(rgb.shape[-1]), list(COLORS)
    fg = foreground_mask(rgb)
    out: list[str | None] = []
    for img, m in zip(rgb, fg):
        if m.sum() < 4:
            out.append(None)
            continue
        col = img.permute(1, 2, 0)[m].median(dim=0).values
        out.append(names[int((refs - col).norm(dim=-1).argmin())])
    return out


def silhouette_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks (..., H, W) -> (...)."""
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@functools.lru_cache(maxsize=4)
def _grid_silhouettes(resolution: int) -> torch.Tensor:
    el = torch.tensor([0.0, 20.0, 40.0, 60.0, 75.0])
    az = torch.arange(0.0, 360.0, 15.0)
    ee, aa = torch.meshgrid(el, az, indexing="ij")
    cams = make_cameras(ee.reshape(-1), aa.reshape(-1))
    sil = []
    for s in SHAPES:
        gt, _ = render_shapes([s] * len(cams), ["red"] * len(cams), cams, resolution)
        sil.append(foreground_mask(gt))
    return torch.stack(sil)  # (S, V, H, W)


def classify_shape(rgb: torch.Tensor, cams: Cameras | None = None) -> tuple[list[str | None], torch.Tensor]:
    """Best-matching shape per image and the (B,S) silhouette IoU per shape (own camera if given, else grid)."""
    res = rgb.shape[-1]
    fg = foreground_mask(rgb)
    if cams is not None:
        own = []
        for s in SHAPES:  # the same foreground rule on both sides (edge pixels count alike)
            gt, _ = render_shapes([s] * len(cams), ["red"] * len(cams), cams, res)
            own.append(silhouette_iou(fg, foreground_mask(gt)))
        scores = torch.stack(own, 1)
    else:
        grid = _grid_silhouettes(res)  # (S,V,H,W)
        scores = silhouette_iou(fg[:, None, None], grid[None]).amax(dim=2)  # (B,S)
    names = list(SHAPES)
    labels = [names[int(i)] if m.sum() >= 4 else None for i, m in zip(scores.argmax(1), fg)]
    return labels, scores


def volume_iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """IoU of two boolean voxel grids of the same shape."""
    union = (pred | truth).sum().item()
    return (pred & truth).sum().item() / union if union else 1.0


def chamfer_to_shape(points: torch.Tensor, shape: str, truth_samples: int = 20000, seed: int = 0,
                     chunk: int = 8192) -> float:
    """Symmetric Chamfer distance (mean of both directions, world units) between surface points (N,3) of a
    result and the true primitive's surface (points sampled on its zero level set); `chunk` points at a time, so
    memory stays O(chunk x truth_samples) for any N."""
    if points.numel() == 0:
        return float("inf")
    gen = torch.Generator().manual_seed(seed)
    truth = surface_samples(shape, truth_samples, gen)
    # the distance matrix in blocks of rows: a noisy surface has millions of vertices, whose whole (N, 20000)
    # matrix would not fit in memory
    to_truth, to_result = [], torch.full((truth.shape[0],), float("inf"))
    for block in points.float().split(chunk):
        d = torch.cdist(block, truth)
        to_truth.append(d.min(1).values)
        to_result = torch.minimum(to_result, d.min(0).values)
    return 0.5 * (torch.cat(to_truth).mean() + to_result.mean()).item()


def surface_samples(shape: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """~n points on the primitive's surface: grid points near the surface projected along the SDF gradient."""
    pts = grid_points(96).reshape(-1, 3)
    pts = pts + (torch.rand(pts.shape, generator=generator) - 0.5) * (2.0 / 96)
    d = sdf(shape, pts)
    pts = pts[d.abs() < 2.0 / 96]
    offsets = torch.eye(3) * 1e-4
    for _ in range(3):  # project onto the zero level set along the SDF gradient (central differences: the
        # exact SDFs have points, e.g. a cylinder's rim, where autograd's sqrt'(0) is not finite)
        dist = sdf(shape, pts)
        g = torch.stack([sdf(shape, pts + o) - sdf(shape, pts - o) for o in offsets], -1)
        pts = pts - dist[:, None] * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    idx = torch.randperm(pts.shape[0], generator=generator)[:n]
    return pts[idx]


# --- Janus: a front on both sides ------------------------------------------------------------------------------
#
# Occupancy grids are indexed [x, y, z] over a grid symmetric about the origin (`grid_points`), y up, the front
# facing +z (the camera at azimuth 0), so both maps below are exact index flips.

JANUS_MIRROR_MARGIN = 0.5  # a result is front/back symmetric past halfway from the truth's own mirror IoU to 1
SYMMETRIC_TURN_IOU = 0.99  # a shape whose 180-degree turn overlaps itself this well has no distinct back


def turn_180(occ: torch.Tensor) -> torch.Tensor:
    """The grid (R,R,R) turned 180 degrees about the vertical axis: (x, y, z) -> (-x, y, -z)."""
    return occ.flip(0).flip(2)


def mirror_front_back(occ: torch.Tensor) -> torch.Tensor:
    """The grid (R,R,R) mirrored front to back: (x, y, z) -> (x, y, -z)."""
    return occ.flip(2)


def has_distinct_back(truth: torch.Tensor) -> bool:
    """Whether a true occupancy grid differs from its own 180-degree turn (IoU below `SYMMETRIC_TURN_IOU`)."""
    return volume_iou(truth, turn_180(truth)) < SYMMETRIC_TURN_IOU


def janus_scores(occ: torch.Tensor, truth: torch.Tensor) -> dict:
    """Whether a result's occupancy `occ` (R,R,R) bool shows the Janus failure against the true occupancy `truth`.

    Janus when the truth turned 180 degrees fits better than the truth (IoU), or when the result is its own
    front/back mirror image beyond the truth: mirror IoU > m + JANUS_MIRROR_MARGIN·(1 − m), m the truth's own
    mirror IoU (1/3 for the wedge). Returns janus (bool; None when the truth has no distinct back, the 180-degree
    turn then being the same shape), iou_turned and mirror_iou (floats; None likewise).
    """
    if not has_distinct_back(truth):
        return {"janus": None, "iou_turned": None, "mirror_iou": None}
    iou_turned = volume_iou(occ, turn_180(truth))
    own = volume_iou(occ, mirror_front_back(occ))
    truth_own = volume_iou(truth, mirror_front_back(truth))
    symmetric = own > truth_own + JANUS_MIRROR_MARGIN * (1.0 - truth_own)
    return {"janus": bool(iou_turned > volume_iou(occ, truth) or symmetric), "iou_turned": iou_turned,
            "mirror_iou": own}
