"""Camera model: the single source of truth for camera ranges, poses, view suffixes and lighting.

Conventions: world is y-up; cameras are camera-to-world 4x4 matrices in the OpenGL convention
(the camera looks down its −z axis, y up) plus a vertical field of view. Azimuth 0 puts the camera on the +z axis
looking at the object's **front**; azimuth grows towards +x. Angles are in degrees at the API.

The shapes world renders its training images with exactly these ranges and rules, and the trainer samples its
cameras with them, so the bundled prior sees at generation time what it saw in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# --- ranges shared by the shapes world and the trainer -------------------------------------------------------
FOV_DEG: float = 40.0  # vertical field of view
DISTANCE: float = 3.0  # camera distance to the origin (world units); the unit cube fills ~2/3 of the frame
ELEVATION_RANGE: tuple[float, float] = (-10.0, 75.0)
AZIMUTH_RANGE: tuple[float, float] = (-180.0, 180.0)
OVERHEAD_ELEVATION: float = 60.0  # above this elevation a view is "overhead"
FRONT_HALF_ANGLE: float = 45.0  # |azimuth| < 45 is front, > 135 is back, the rest is side
AMBIENT: float = 0.4  # Lambertian shading: albedo * (AMBIENT + (1-AMBIENT) * max(0, n.l))
VIEW_SUFFIXES: tuple[str, ...] = (", front view", ", side view", ", back view", ", overhead view")


@dataclass
class Cameras:
    """A batch of pinhole cameras.

    c2w: (B,4,4) camera-to-world (OpenGL); fov_deg: (B,) vertical FOV; elevation_deg, azimuth_deg, distance: (B,).
    """

    c2w: torch.Tensor
    fov_deg: torch.Tensor
    elevation_deg: torch.Tensor
    azimuth_deg: torch.Tensor
    distance: torch.Tensor

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(t.to(device) for t in (self.c2w, self.fov_deg, self.elevation_deg, self.azimuth_deg,
                                                  self.distance)))

    def __getitem__(self, idx) -> "Cameras":
        return Cameras(self.c2w[idx], self.fov_deg[idx], self.elevation_deg[idx], self.azimuth_deg[idx],
                       self.distance[idx])


def look_at_origin(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices (B,4,4) for cameras on a sphere looking at the origin, y up."""
    el = torch.deg2rad(elevation_deg.double())
    az = torch.deg2rad(azimuth_deg.double())
    d = distance.double()
    pos = torch.stack([d * torch.cos(el) * torch.sin(az), d * torch.sin(el), d * torch.cos(el) * torch.cos(az)], -1)
    z_axis = pos / pos.norm(dim=-1, keepdim=True)  # camera looks down -z, i.e. towards the origin
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(z_axis)
    x_axis = torch.linalg.cross(up, z_axis, dim=-1)
    # at the poles the up vector is parallel to z: fall back to world -z... never reached in our ranges (|el| < 90)
    x_axis = x_axis / x_axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    y_axis = torch.linalg.cross(z_axis, x_axis, dim=-1)
    c2w = torch.zeros(pos.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x_axis, y_axis, z_axis, pos
    c2w[:, 3, 3] = 1.0
    return c2w.float()


def make_cameras(elevation_deg, azimuth_deg, distance=None, fov_deg=None) -> Cameras:
    """Build `Cameras` from angles in degrees (tensors or sequences); distance/fov default to the shared constants."""
    el = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
    az = wrap_azimuth(az)
    b = el.shape[0]
    d = torch.full((b,), DISTANCE) if distance is None else torch.as_tensor(distance, dtype=torch.float32).expand(b)
    f = torch.full((b,), FOV_DEG) if fov_deg is None else torch.as_tensor(fov_deg, dtype=torch.float32).expand(b)
    return Cameras(look_at_origin(el, az, d), f.clone(), el, az, d.clone())


def wrap_azimuth(az: torch.Tensor) -> torch.Tensor:
    """Wrap azimuths (degrees) to [-180, 180)."""
    return torch.remainder(az + 180.0, 360.0) - 180.0


def sample_cameras(
    batch: int,
    generator: torch.Generator | None = None,
    elevation_range: tuple[float, float] = ELEVATION_RANGE,
    azimuth_range: tuple[float, float] = AZIMUTH_RANGE,
    distance_range: tuple[float, float] = (DISTANCE, DISTANCE),
    fov_range: tuple[float, float] = (FOV_DEG, FOV_DEG),
    stratified: bool = True,
) -> Cameras:
    """Random cameras looking at the origin.

    Azimuth is stratified across the batch (one random offset, evenly spaced bins) so each batch sees the object
    from all around; elevation is uniform in *sin(elevation)* (uniform on the sphere's band) within its range.
    """

    def rand(n: int) -> torch.Tensor:
        return torch.rand(n, generator=generator)

    lo, hi = azimuth_range
    if stratified and batch > 1:
        az = lo + (hi - lo) * ((torch.arange(batch) + rand(1)) / batch)
        az = az[torch.randperm(batch, generator=generator)]
    else:
        az = lo + (hi - lo) * rand(batch)
    s_lo, s_hi = math.sin(math.radians(elevation_range[0])), math.sin(math.radians(elevation_range[1]))
    el = torch.rad2deg(torch.asin(s_lo + (s_hi - s_lo) * rand(batch)))
    dist = distance_range[0] + (distance_range[1] - distance_range[0]) * rand(batch)
    fov = fov_range[0] + (fov_range[1] - fov_range[0]) * rand(batch)
    return make_cameras(el, az, dist, fov)


def view_index(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Index into VIEW_SUFFIXES: 0 front, 1 side, 2 back, 3 overhead (overhead wins above OVERHEAD_ELEVATION)."""
    a = wrap_azimuth(torch.as_tensor(azimuth_deg, dtype=torch.float32)).abs()
    idx = torch.where(a < FRONT_HALF_ANGLE, 0, torch.where(a > 180.0 - FRONT_HALF_ANGLE, 2, 1))
    return torch.where(torch.as_tensor(elevation_deg) > OVERHEAD_ELEVATION, 3, idx)


def view_suffixes(cams: Cameras) -> list[str]:
    """The view-dependent prompt suffix of each camera (", front view", ...)."""
    return [VIEW_SUFFIXES[i] for i in view_index(cams.elevation_deg, cams.azimuth_deg).tolist()]


def camera_features(cams: Cameras) -> torch.Tensor:
    """Camera condition vector (B,5) for camera-aware priors: sin/cos of elevation and azimuth, and a 'present' flag.

    A dropped camera (classifier-free guidance on the camera) is the zero vector.
    """
    el, az = torch.deg2rad(cams.elevation_deg), torch.deg2rad(cams.azimuth_deg)
    return torch.stack([torch.sin(el), torch.cos(el), torch.sin(az), torch.cos(az), torch.ones_like(el)], -1)


def orbit_cameras(n: int, elevation_deg: float = 20.0, distance: float = DISTANCE, fov_deg: float = FOV_DEG,
                  start_azimuth_deg: float = 0.0) -> Cameras:
    """n cameras evenly spaced on a horizontal orbit (for previews and turntable videos)."""
    az = start_azimuth_deg + 360.0 * torch.arange(n, dtype=torch.float32) / n
    return make_cameras(torch.full((n,), elevation_deg), az, distance, fov_deg)


def light_directions(cams: Cameras) -> torch.Tensor:
    """Unit direction towards the light (B,3), world space: a headlight raised above the camera.

    The light sits at the camera's azimuth, 30 degrees higher in elevation than the camera (capped at 85), so
    lit faces are the ones the camera sees and tops are a bit brighter than sides.
    """
    el = torch.deg2rad((cams.elevation_deg + 30.0).clamp(max=85.0))
    az = torch.deg2rad(cams.azimuth_deg)
    return torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)


def camera_rays(cams: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres: origins (B,H,W,3) and unit directions (B,H,W,3).

    Row 0 is the top of the image.
    """
    device = cams.c2w.device
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cams.fov_deg.to(device)))  # (B,) in pixels
    j, i = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) + 0.5,
                          torch.arange(width, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    x = (i - 0.5 * width)[None] / focal[:, None, None]
    y = -(j - 0.5 * height)[None] / focal[:, None, None]
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], -1)  # (B,H,W,3)
    rot = cams.c2w[:, :3, :3].to(device)
    dirs = torch.einsum("bij,bhwj->bhwi", rot, dirs_cam)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cams.c2w[:, None, None, :3, 3].to(device).expand_as(dirs)
    return origins, dirs
