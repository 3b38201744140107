"""dream3d cameras in the splatting convention: OpenCV world-to-camera matrices and pinhole intrinsics in pixels."""

from __future__ import annotations

import torch

from dream3d.cameras import Cameras

# OpenGL camera axes (x right, y up, looking down -z) to OpenCV ones (x right, y down, looking down +z)
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def cameras_to_splat(cams: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera matrices and intrinsics of `cams` for an image of height x width pixels.

    Returns viewmats: (C,4,4) world-to-camera, OpenCV convention (x right, y down, z forward, world units), and
    Ks: (C,3,3) pinhole intrinsics in pixels, square pixels, principal point at the image centre, so that a pixel
    (row j, column i) has its centre at (i + 0.5, j + 0.5): the same rays as `dream3d.cameras.camera_rays`.
    Both on the device and in the dtype of `cams.c2w`.
    """
    c2w = cams.c2w.double() @ _GL_TO_CV.to(cams.c2w.device)
    viewmats = torch.linalg.inv(c2w)
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cams.fov_deg.double().to(c2w.device)))  # (C,) pixels
    ks = torch.zeros(len(cams), 3, 3, dtype=torch.float64, device=c2w.device)
    ks[:, 0, 0], ks[:, 1, 1] = focal, focal
    ks[:, 0, 2], ks[:, 1, 2], ks[:, 2, 2] = 0.5 * width, 0.5 * height, 1.0
    return viewmats.to(cams.c2w.dtype), ks.to(cams.c2w.dtype)
