"""Geometry: fields the renderer turns into images.

The geometry interface (duck-typed; the volume renderer, the exporter and DMTet rely on it):
    bound: float                       half side of the world box [-bound, bound]^3
    density(x (N,3)) -> (N,)           volume density σ ≥ 0 per world unit
    albedo(x (N,3)) -> (N,3)           base colour in [0,1]
    forward(x (N,3)) -> (σ (N,), albedo (N,3))   both from one evaluation
    normals(x (N,3)) -> (N,3)          unit outward normals −∇σ/|∇σ|, differentiable w.r.t. parameters
    forward_with_normals(x) -> (σ, albedo, normals)   optional fused version
"""

from dream3d.geometry.analytic import SDFDensityField
from dream3d.geometry.background import MLPBackground, SolidBackground
from dream3d.geometry.implicit_volume import ImplicitVolume
from dream3d.geometry.normals import density_normals

__all__ = ["ImplicitVolume", "SDFDensityField", "SolidBackground", "MLPBackground", "density_normals"]
