"""3D Gaussian splatting: EWA projection, tile compositing and its exact backward, on CPU (torch reference and
our C++ kernel) and CUDA (gsplat). See `rasterize.rasterize_gaussians`."""

from dream3d.render.splat.camera import cameras_to_splat
from dream3d.render.splat.rasterize import (
    BACKENDS,
    SplatOut,
    rasterize_gaussians,
    resolve_backend,
)

__all__ = ["BACKENDS", "SplatOut", "cameras_to_splat", "rasterize_gaussians", "resolve_backend"]
