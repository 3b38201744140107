"""EWA projection of 3D Gaussians to screen-space splats, shared by every CPU backend (autograd differentiates it).

The rules are those of 3D Gaussian Splatting (Kerbl et al. 2023) after EWA splatting (Zwicker et al. 2001):
the 3D covariance R S S^T R^T is rotated into the camera and mapped to the image by the Jacobian of the
perspective projection at the Gaussian's centre, J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]], whose x/z and
y/z are clamped to 1.3x the half field of view (so splats far outside the frame do not blow up); a low-pass filter
adds `eps2d` to the 2D covariance's diagonal; the splat's radius is 3 standard deviations along its major axis.
A Gaussian is culled (radius 0) when its centre is not beyond the near plane, when its 2D covariance is
degenerate, or when its square of that radius lies outside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TILE_SIZE: int = 16  # pixels per side of a compositing tile
ALPHA_MIN: float = 1.0 / 255.0  # a splat contributes to a pixel only with at least this alpha
ALPHA_MAX: float = 0.99  # the opacity clamp of a splat at a pixel
T_MIN: float = 1e-4  # compositing stops before the transmittance would fall below this


@dataclass
class Splats:
    """Screen-space splats of N Gaussians seen by C cameras.

    means2d: (C,N,2) centres in pixels (x right, y down; pixel centres at +0.5).
    conics: (C,N,3) the inverse 2D covariance (a, b, c) = ([0,0], [0,1], [1,1]) in 1/pixel^2.
    depths: (C,N) camera-space z (world units). radii: (C,N) int32 pixels, 0 = culled.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor


Matrix = list  # a small matrix as nested lists of broadcastable tensors (or python 0 for a known zero)


def _matmul(a: Matrix, b: Matrix) -> Matrix:
    """a @ b for nested-list matrices, skipping known zeros: on the CPU, elementwise products of (C,N) tensors are
    much faster than batched 3x3 matmuls, forward and backward."""
    def dot(row, col):
        terms = [x * y for x, y in zip(row, col) if not (isinstance(x, int) or isinstance(y, int))]
        return sum(terms[1:], terms[0])

    cols = list(zip(*b))
    return [[dot(row, col) for col in cols] for row in a]


def _transpose(a: Matrix) -> Matrix:
    return [list(col) for col in zip(*a)]


def _rotation_entries(quats: torch.Tensor) -> Matrix:
    """The rotation matrices of quaternions (N,4) (w, x, y, z; normalised first) as 3x3 nested lists of (N,)."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    return [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]


def quaternion_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N,3,3) of quaternions (N,4) in (w, x, y, z) order; they are normalised first."""
    return torch.stack([torch.stack(row, -1) for row in _rotation_entries(quats)], -2)


def covariances_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space covariances (N,3,3) = R S S^T R^T of rotations quats (N,4) and standard deviations scales (N,3)."""
    m = quaternion_to_rotation(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, viewmats: torch.Tensor,
                      ks: torch.Tensor, width: int, height: int, near_plane: float = 0.01,
                      eps2d: float = 0.3) -> Splats:
    """Project N Gaussians (means (N,3), quats (N,4), scales (N,3)) into C cameras (viewmats (C,4,4) OpenCV
    world-to-camera, ks (C,3,3) intrinsics in pixels). Culled splats have finite values and zero gradients."""
    rot = [[viewmats[:, i, j, None] for j in range(3)] for i in range(3)]  # (C,1) entries
    p_cam = [row[0] * means[:, 0] + row[1] * means[:, 1] + row[2] * means[:, 2] + viewmats[:, i, 3, None]
             for i, row in enumerate(rot)]  # x, y, z in the camera, (C,N) each
    s = scales.unbind(-1)
    m = [[r_ij * s[j] for j, r_ij in enumerate(row)] for row in _rotation_entries(quats)]  # R S, (N,) entries
    z = p_cam[2]
    in_front = z > near_plane
    z = torch.where(in_front, z, torch.ones_like(z))  # keeps culled splats finite (and their gradients zero)
    fx, fy = ks[:, 0, 0, None], ks[:, 1, 1, None]  # (C,1)
    cx, cy = ks[:, 0, 2, None], ks[:, 1, 2, None]
    x_over_z, y_over_z = p_cam[0] / z, p_cam[1] / z
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy  # half field of view (tangents)
    tx = z * torch.minimum(torch.maximum(x_over_z, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    ty = z * torch.minimum(torch.maximum(y_over_z, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    jac = [[fx / z, 0, -fx * tx / (z * z)], [0, fy / z, -fy * ty / (z * z)]]
    jm = _matmul(_matmul(jac, rot), m)  # J W R S, (C,N) entries: the 2D covariance is jm jm^T (+ eps2d I)
    (a, b), (_, c) = _matmul(jm, _transpose(jm))
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    valid = in_front & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x_over_z + cx, fy * y_over_z + cy], -1)
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lambda_max = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.01))
        radii = torch.ceil(3.0 * torch.sqrt(lambda_max))
        mx, my = means2d[..., 0], means2d[..., 1]
        on_screen = (mx + radii > 0) & (mx - radii < width) & (my + radii > 0) & (my - radii < height)
        radii = torch.where(valid & on_screen, radii, torch.zeros_like(radii)).to(torch.int32)
    return Splats(means2d, conics, p_cam[2], radii)


def tile_rects(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The tiles each splat is composited in: (C,N,4) int32 (x0, y0, x1, y1), tiles x0 <= tx < x1, y0 <= ty < y1.

    The tiles touched by the splat's square of side 2 x radius around its centre (empty for culled splats). Every
    backend composites a splat in exactly these tiles, which is what makes their images equal.
    """
    tiles_x, tiles_y = -(-width // TILE_SIZE), -(-height // TILE_SIZE)
    with torch.no_grad():
        r = radii.to(means2d.dtype)
        mx, my = means2d[..., 0] / TILE_SIZE, means2d[..., 1] / TILE_SIZE
        rt = r / TILE_SIZE
        x0 = torch.floor(mx - rt).clamp(0, tiles_x)
        x1 = torch.ceil(mx + rt).clamp(0, tiles_x)
        y0 = torch.floor(my - rt).clamp(0, tiles_y)
        y1 = torch.ceil(my + rt).clamp(0, tiles_y)
        rects = torch.stack([x0, y0, x1, y1], -1).to(torch.int32)
        return torch.where((radii > 0)[..., None], rects, torch.zeros_like(rects))
