"""Mesh renderer: a DMTet geometry rasterized into the volume renderer's output dict.

Per step the geometry is meshed (marching tetrahedra), rasterized (`dream3d.render.rasterize`), and every covered
pixel gets the interpolated world position x, the interpolated vertex normal n, the albedo field at x and the
shading of `dream3d.render.shading` (the NeRF stage's models); empty pixels show the background. The images
are then antialiased at the silhouettes, which is where geometry gradients of the silhouette come from.

Outputs as `VolumeRenderer`: rgb (B,3,H,W) composited over the background, opacity (B,1,H,W) (coverage: 1 inside,
fractional at antialiased silhouette pixels, 0 outside), depth (B,1,H,W) = opacity · distance along the ray
(world units), normal (B,3,H,W) = opacity · n (world space). In training, `regularizer` (a scalar) holds the
weighted mesh regularisers (sdf sign, normal consistency).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dream3d.cameras import Cameras, camera_rays, light_directions
from dream3d.errors import Dream3DError
from dream3d.geometry.background import SolidBackground
from dream3d.geometry.mesh_ops import normal_consistency, vertex_normals
from dream3d.render.output import RenderOut
from dream3d.render.rasterize import Rasterizer, mesh_topology
from dream3d.render.shading import check_shading, needs_normals, shade


class MeshRenderer(nn.Module):
    """Renders a geometry with `extract_mesh()` and `albedo(x)` (DMTetGeometry) through a rasterizer.

    backend: rasterizer backend ("auto" | "torch" | "nvdiffrast"); sdf_regularizer, normal_consistency,
    sdf_anchor: weights of the regularisers returned as `regularizer` when rendering with gradients.
    """

    def __init__(self, geometry: nn.Module, background: nn.Module | None = None, backend: str = "auto",
                 sdf_regularizer: float = 0.0, normal_consistency: float = 0.0, sdf_anchor: float = 0.0) -> None:
        super().__init__()
        self.geometry = geometry
        self.background = background if background is not None else SolidBackground()
        self.bound = float(geometry.bound)
        self.rasterizer = Rasterizer(backend)
        self.sdf_regularizer, self.normal_consistency = float(sdf_regularizer), float(normal_consistency)
        self.sdf_anchor = float(sdf_anchor)

    def update_occupancy(self, step: int, generator: torch.Generator | None = None) -> bool:
        """The trainer's per-step hook; a mesh has no occupancy grid to update."""
        return False

    def stats(self) -> dict[str, float]:
        """No per-step figures beyond the render's face count."""
        return {}

    @property
    def device(self) -> torch.device:
        return self.geometry.sdf.device

    def render_mesh(self, mesh, cams: Cameras, height: int, width: int, shading: str = "albedo",
                    light_dirs: torch.Tensor | None = None, with_normal: bool | None = None,
                    bg_color: torch.Tensor | None = None, topo=None) -> RenderOut:
        """Render a given mesh (`TriMesh`-like: vertices (V,3), faces (F,3)) for B cameras (see module doc)."""
        check_shading(shading)
        want_normals = needs_normals(shading) if with_normal is None else (with_normal or needs_normals(shading))
        cams = cams.to(self.device)
        b, hw = len(cams), height * width
        verts, faces = mesh.vertices, mesh.faces
        origins, dirs = camera_rays(cams, height, width)
        if bg_color is not None:
            bg = torch.as_tensor(bg_color, dtype=torch.float32, device=self.device).reshape(-1, 3).expand(b, 3)
            bg = bg.repeat_interleave(hw, 0)
        else:
            bg = self.background(dirs.reshape(-1, 3))
        light = light_directions(cams) if light_dirs is None else torch.as_tensor(light_dirs).to(self.device)
        light = light.reshape(-1, 3).float().expand(b, 3)
        frags = self.rasterizer.rasterize(verts, faces, cams, height, width)
        view = frags.pix // hw
        pos = frags.interpolate(verts)
        normals = None
        if want_normals:
            normals = F.normalize(frags.interpolate(vertex_normals(verts, faces)), dim=-1, eps=1e-20)
        albedo = self.geometry.albedo(pos) if pos.shape[0] else pos.new_zeros(0, 3)
        color = shade(albedo, normals, light[view], shading)
        dist = (pos - origins.reshape(-1, 3)[frags.pix]).norm(dim=-1, keepdim=True)
        packed = [color, torch.ones_like(dist), dist] + ([normals] if want_normals else [])
        fill = [bg, bg.new_zeros(b * hw, 2)] + ([bg.new_zeros(b * hw, 3)] if want_normals else [])
        img = frags.to_image(torch.cat(packed, -1), torch.cat(fill, -1))
        if faces.shape[0] > 0:
            img = self.rasterizer.antialias(img, frags, topo)
        img = img.permute(0, 3, 1, 2)
        return RenderOut(rgb=img[:, :3], opacity=img[:, 3:4], depth=img[:, 4:5],
                         normal=img[:, 5:8] if want_normals else None, n_faces=int(faces.shape[0]))

    def forward(self, cams: Cameras, height: int, width: int, shading: str = "albedo",
                light_dirs: torch.Tensor | None = None, generator: torch.Generator | None = None,
                with_normal: bool | None = None, stratified: bool | None = None,
                bg_color: torch.Tensor | None = None) -> RenderOut:
        """Render B cameras at height x width (the `VolumeRenderer.forward` signature; generator and
        stratified are unused: rasterization is deterministic)."""
        mesh = self.geometry.extract_mesh()
        if mesh.faces.shape[0] == 0 and torch.is_grad_enabled():
            raise Dream3DError("the mesh has no surface left (every sdf value has one sign); "
                               "try a lower mesh.sdf_lr")
        topo = mesh_topology(mesh.faces) if mesh.faces.shape[0] else None
        out = self.render_mesh(mesh, cams, height, width, shading, light_dirs, with_normal, bg_color, topo)
        if torch.is_grad_enabled() and (self.sdf_regularizer > 0 or self.normal_consistency > 0 or self.sdf_anchor > 0):
            reg = mesh.vertices.new_zeros(())
            if self.sdf_regularizer > 0:
                reg = reg + self.sdf_regularizer * self.geometry.sdf_regularizer(mesh.grid_edges)
            if self.sdf_anchor > 0:
                reg = reg + self.sdf_anchor * self.geometry.anchor_penalty()
            if self.normal_consistency > 0:
                reg = reg + self.normal_consistency * normal_consistency(mesh.vertices, mesh.faces,
                                                                         topo.edge_faces)
            out.regularizer = reg
        return out

    @torch.no_grad()
    def render_chunked(self, cams: Cameras, height: int, width: int, shading: str = "albedo",
                       light_dirs: torch.Tensor | None = None, chunk_rays: int = 16384, with_normal: bool = True,
                       bg_color: torch.Tensor | None = None) -> RenderOut:
        """Evaluation render (no grad), one view at a time (the mesh is extracted once); same outputs."""
        mesh = self.geometry.extract_mesh()
        topo = mesh_topology(mesh.faces) if mesh.faces.shape[0] else None
        light = light_directions(cams) if light_dirs is None else torch.as_tensor(light_dirs).reshape(-1, 3)
        light = light.expand(len(cams), 3)
        bgc = None if bg_color is None else torch.as_tensor(bg_color, dtype=torch.float32).reshape(-1, 3).expand(
            len(cams), 3)
        parts = [self.render_mesh(mesh, cams[i:i + 1], height, width, shading, light[i:i + 1], with_normal,
                                  None if bgc is None else bgc[i], topo) for i in range(len(cams))]
        normal = torch.cat([p.normal for p in parts]) if parts[0].normal is not None else None
        return RenderOut(rgb=torch.cat([p.rgb for p in parts]), opacity=torch.cat([p.opacity for p in parts]),
                         depth=torch.cat([p.depth for p in parts]), normal=normal, n_faces=parts[0].n_faces)
