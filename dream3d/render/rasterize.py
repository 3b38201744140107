"""Differentiable triangle rasterization: pure torch (any device, CPU included) or nvdiffrast (CUDA).

Camera model: `dream3d.cameras` (camera-to-world 4x4, OpenGL: the camera looks down −z, y up; vertical FOV).
Pixel coordinates: x to the right, y down, pixel (i, j) covers [i, i+1] x [j, j+1] and its centre is (i+½, j+½),
so a pixel centre is hit by exactly the ray `cameras.camera_rays` shoots through it.

Three steps, as in nvdiffrast (Laine et al. 2020, "Modular primitives for high-performance differentiable
rendering"):

1. **Rasterize** (no gradients): every triangle whose three vertices lie in front of the near plane is tested
   against the pixel centres inside its screen bounding box; (triangle, pixel) candidate pairs are enumerated in
   chunks of at most `max_pairs`, so memory stays bounded whatever the mesh size; a z-buffer on the view depth
   w = −z_cam keeps the nearest triangle per pixel. Back faces are not culled (open meshes render both sides).
2. **Barycentrics** (differentiable): for every covered pixel the perspective-correct barycentrics of its
   triangle, c_i ∝ b_i / w_i with b the screen-space barycentrics, as a function of the projected vertices, so
   interpolated attributes are exact (a linear function of the 3D position interpolates to its value at the
   ray-triangle hit point) and carry gradients to the vertices.
3. **Antialias** (differentiable): the hard z-buffer image is piecewise constant in the vertex positions, so
   silhouettes get no gradient from it. For every silhouette edge (a boundary edge, or an edge between a
   front- and a back-facing triangle) and every horizontal and vertical pair of pixel centres it passes between,
   the edge's crossing point d (distance from the inside pixel's centre, in pixels) blends the two colours as an
   analytic 1-D coverage: d > ½ moves (d − ½) of the inside colour into the outside pixel, d < ½ moves (½ − d)
   of the outside colour into the inside pixel. A pair is blended only when its pixels show different
   triangles, the inside pixel is not in front of the edge by more than `occlusion_tolerance` (relative depth)
   unless it shows the edge's triangle or a triangle sharing a vertex with it, and the outside pixel is empty
   or behind the edge by more than that tolerance (a real occlusion boundary, not a fold of the same surface).
   Image values are then continuous in the vertex positions between pixel-centre crossings, with gradients
   d image / d vertex = (c_in − c_out)·∂d/∂vertex.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass

import torch

from dream3d.cameras import Cameras
from dream3d.errors import ConfigError
from dream3d.geometry.triangles import covered_pixels, edge_function

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "nvdiffrast")


# --- projection ------------------------------------------------------------------------------------------------
def project(vertices: torch.Tensor, cams: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into the pixel grid of each camera.

    vertices: (V,3) or (B,V,3) world units. Returns xy (B,V,2) in pixels (x right, y down, centres at +½) and
    w (B,V) the view depth −z_cam (world units, > 0 in front of the camera); differentiable w.r.t. vertices.
    """
    c2w = cams.c2w.to(device=vertices.device, dtype=vertices.dtype)
    rot, pos = c2w[:, :3, :3], c2w[:, :3, 3]
    v = vertices if vertices.dim() == 3 else vertices[None]
    pc = torch.einsum("bji,bvj->bvi", rot, v - pos[:, None])  # R^T (v - t): camera coordinates
    w = -pc[..., 2]
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cams.fov_deg.to(vertices)))  # (B,) pixels
    x = 0.5 * width + focal[:, None] * pc[..., 0] / w
    y = 0.5 * height - focal[:, None] * pc[..., 1] / w
    return torch.stack([x, y], -1), w


# --- mesh topology ---------------------------------------------------------------------------------------------
@dataclass
class Topology:
    """Edges of a triangle mesh. edges (E,2) vertex ids; edge_faces (E,2) the (first) two faces of each edge,
    −1 where an edge has one face only."""

    edges: torch.Tensor
    edge_faces: torch.Tensor


def mesh_topology(faces: torch.Tensor) -> Topology:
    """Unique undirected edges of `faces` (F,3) long and the faces on either side of each."""
    f = faces.shape[0]
    directed = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F,2)
    face_of = torch.arange(f, device=faces.device).repeat(3)
    und = directed.sort(dim=1).values
    nv = int(faces.max()) + 1 if f else 1
    key, order = (und[:, 0] * nv + und[:, 1]).sort()  # 1-D keys: much faster than unique(dim=0)
    new = torch.ones_like(key, dtype=torch.bool)
    new[1:] = key[1:] != key[:-1]
    first = new.nonzero().squeeze(1)
    counts = torch.diff(torch.cat([first, first.new_tensor([key.shape[0]])]))
    edges = und[order[first]]
    f0 = face_of[order[first]]
    second = order[(first + 1).clamp(max=max(key.shape[0] - 1, 0))]
    f1 = torch.where(counts >= 2, face_of[second], torch.full_like(f0, -1))
    return Topology(edges, torch.stack([f0, f1], 1))


# --- fragments -------------------------------------------------------------------------------------------------
@dataclass
class Fragments:
    """What rasterization leaves for interpolation and antialiasing.

    face_id (B,H,W) long, −1 where empty; depth (B,H,W) view depth w of the nearest surface (inf where empty,
    no grad); pix (N,) flat indices into B·H·W of the covered pixels; bary (N,3) their perspective-correct
    barycentrics (differentiable); xy (B,V,2), w (B,V) the projected vertices; faces (F,3).
    """

    face_id: torch.Tensor
    depth: torch.Tensor
    pix: torch.Tensor
    bary: torch.Tensor
    xy: torch.Tensor
    w: torch.Tensor
    faces: torch.Tensor
    backend: str = "torch"
    extra: dict | None = None  # backend-specific (nvdiffrast: rast, clip)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.face_id.shape)  # type: ignore[return-value]

    def interpolate(self, attr: torch.Tensor) -> torch.Tensor:
        """Per-vertex attributes (V,C) or (B,V,C) -> (N,C) at the covered pixels (perspective-correct)."""
        b, h, w = self.shape
        fid = self.face_id.reshape(-1)[self.pix]
        tri = self.faces[fid]  # (N,3)
        if attr.dim() == 2:
            vals = attr[tri]  # (N,3,C)
        else:
            view = self.pix // (h * w)
            vals = attr[view[:, None], tri]
        return (self.bary[..., None] * vals).sum(1)

    def to_image(self, packed: torch.Tensor, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Packed values (N,C) -> an image (B,H,W,C) with `fill` ((C,), (B·H·W,C) or a number) elsewhere."""
        b, h, w = self.shape
        c = packed.shape[-1]
        if torch.is_tensor(fill) and fill.dim() == 2:
            base = fill.to(packed.dtype)
        else:
            base = torch.as_tensor(fill, dtype=packed.dtype, device=packed.device).expand(b * h * w, c)
        img = base.index_put((self.pix,), packed)
        return img.reshape(b, h, w, c)


# --- torch backend ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _zbuffer_view(xy: torch.Tensor, w: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                  near: float, max_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest face id (H·W,) (−1 empty) and its view depth (H·W,) (inf empty) for one view."""
    tw = w[faces]  # (F,3)
    zbuf = torch.full((height * width,), math.inf, device=xy.device, dtype=xy.dtype)
    fbuf = torch.full((height * width,), -1, device=xy.device, dtype=torch.long)
    for fr, px, py, b in covered_pixels(xy[faces], (tw > near).all(1), height, width, max_pairs):
        depth = 1.0 / (b / tw[fr]).sum(1)
        pix = py * width + px
        cz = torch.full_like(zbuf, math.inf).scatter_reduce(0, pix, depth, "amin")
        win = depth <= cz[pix]
        cf = torch.full_like(fbuf, -1).scatter_reduce(0, pix[win], fr[win], "amax")
        better = cz < zbuf
        zbuf = torch.where(better, cz, zbuf)
        fbuf = torch.where(better, cf, fbuf)
    return fbuf, zbuf


def perspective_barycentrics(xy: torch.Tensor, w: torch.Tensor, tri: torch.Tensor,
                             q: torch.Tensor) -> torch.Tensor:
    """Perspective-correct barycentrics (N,3) of screen points q (N,2) in triangles tri (N,3) (vertex ids into
    xy (V,2) / w (V,)): c_i = (b_i / w_i) / Σ_j (b_j / w_j), b the screen-space barycentrics."""
    p, ww = xy[tri], w[tri]
    area2 = edge_function(p[:, 0], p[:, 1], p[:, 2])
    b = torch.stack([edge_function(p[:, 1], p[:, 2], q), edge_function(p[:, 2], p[:, 0], q),
                     edge_function(p[:, 0], p[:, 1], q)], -1) / area2[:, None]
    c = b / ww
    return c / c.sum(-1, keepdim=True)


def rasterize_torch(vertices: torch.Tensor, faces: torch.Tensor, cams: Cameras, height: int, width: int,
                    near: float = 1e-3, max_pairs: int = 1 << 20) -> Fragments:
    """Pure-torch rasterization of a mesh (vertices (V,3) or (B,V,3), faces (F,3) long) into B views."""
    xy, w = project(vertices, cams, height, width)
    b = xy.shape[0]
    fids, zs = [], []
    for i in range(b):
        f, z = _zbuffer_view(xy[i].detach(), w[i].detach(), faces, height, width, near, max_pairs)
        fids.append(f)
        zs.append(z)
    face_id = torch.stack(fids).reshape(b, height, width)
    depth = torch.stack(zs).reshape(b, height, width)
    pix = (face_id.reshape(-1) >= 0).nonzero().squeeze(1)
    view, rem = pix // (height * width), pix % (height * width)
    q = torch.stack([rem % width, rem // width], -1).to(xy.dtype) + 0.5
    tri = faces[face_id.reshape(-1)[pix]]
    offset = (view * xy.shape[1])[:, None]
    bary = perspective_barycentrics(xy.reshape(-1, 2), w.reshape(-1), tri + offset, q)
    return Fragments(face_id, depth, pix, bary, xy, w, faces, "torch")


# --- antialiasing ----------------------------------------------------------------------------------------------
def silhouette_edges(xy: torch.Tensor, w: torch.Tensor, faces: torch.Tensor, topo: Topology,
                     near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Silhouette edges of one view: (edge ids (S,), inside face (S,)).

    An edge is a silhouette when it has one face in front of the near plane (a boundary), or when one face is
    front-facing and the other back-facing; its inside face is the front-facing (or only) one. Faces of zero
    screen area (degenerate, or seen exactly edge-on) make no silhouette. xy (V,2), w (V,): one view's
    projection.
    """
    tri = xy[faces]
    area2 = edge_function(tri[:, 0], tri[:, 1], tri[:, 2])
    in_front = (w[faces] > near).all(1)
    front = (area2 < -1e-12) & in_front  # counter-clockwise seen from outside is clockwise with y down
    back = (area2 > 1e-12) & in_front
    f0, f1 = topo.edge_faces[:, 0], topo.edge_faces[:, 1]
    has1 = f1 >= 0
    g1 = f1.clamp_min(0)
    e0, e1 = in_front[f0], has1 & in_front[g1]
    single = (e0 & ~e1 & (front[f0] | back[f0])) | (e1 & ~e0 & (front[g1] | back[g1]))
    contour = e0 & e1 & ((front[f0] & back[g1]) | (back[f0] & front[g1]))
    inside = torch.where(single, torch.where(e0, f0, g1), torch.where(front[f0], f0, g1))
    idx = (single | contour).nonzero().squeeze(1)
    return idx, inside[idx]


def _edge_pairs(xy: torch.Tensor, w: torch.Tensor, faces: torch.Tensor, edges: torch.Tensor,
                inside_face: torch.Tensor, face_id: torch.Tensor, depth: torch.Tensor,
                occlusion_tolerance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel pairs along rows crossed by silhouette edges, for one view.

    xy (V,2) with coordinate 0 along the rows, 1 across; face_id, depth (H,W) with rows along dim 0.
    Returns (inside pixel (M,), outside pixel (M,)) flat indices into H·W and the crossing distance from the
    inside pixel's centre d (M,) (differentiable w.r.t. xy).
    """
    h, wd = face_id.shape
    a, b = xy[edges[:, 0]], xy[edges[:, 1]]
    with torch.no_grad():
        lo = torch.minimum(a[:, 1], b[:, 1])
        hi = torch.maximum(a[:, 1], b[:, 1])
        r0 = torch.ceil(lo - 0.5).clamp(0, h).long()
        r1 = torch.ceil(hi - 0.5).clamp(0, h).long()  # rows r with lo <= r + ½ < hi
        cnt = (r1 - r0).clamp_min(0)
        e = torch.repeat_interleave(torch.arange(edges.shape[0], device=xy.device), cnt)
        first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        row = r0[e] + torch.arange(e.shape[0], device=xy.device) - first
    ae, be = a[e], b[e]
    yc = row.to(xy.dtype) + 0.5
    t = (yc - ae[:, 1]) / (be[:, 1] - ae[:, 1])
    x = ae[:, 0] + t * (be[:, 0] - ae[:, 0])
    with torch.no_grad():
        i = torch.floor(x - 0.5).long()
        ok = (i >= 0) & (i + 1 < wd)
        fin = inside_face[e]
        centroid = xy[faces[fin]].mean(1)
        side = edge_function(ae, be, centroid)
        right = (be[:, 1] - ae[:, 1] < 0) == (side > 0)  # inside face right of the crossing (dE/dx = a.y − b.y)
        i = i.clamp(0, wd - 2)
        left_pix, right_pix = row * wd + i, row * wd + i + 1
        pin = torch.where(right, right_pix, left_pix)
        pout = torch.where(right, left_pix, right_pix)
        fid, dep = face_id.reshape(-1), depth.reshape(-1)
        tw = t.detach().clamp(0, 1)
        we = w[edges[e]]
        edge_depth = 1.0 / ((1 - tw) / we[:, 0] + tw / we[:, 1])
        f_in = fid[pin]
        shares = (f_in >= 0) & (faces[f_in.clamp_min(0)][:, :, None] == faces[fin][:, None, :]).any(2).any(1)
        in_ok = (f_in >= 0) & (shares | (dep[pin] >= edge_depth * (1 - occlusion_tolerance)))
        out_ok = (fid[pout] < 0) | (dep[pout] > edge_depth * (1 + occlusion_tolerance))
        keep = (ok & in_ok & out_ok & (fid[pin] != fid[pout])).nonzero().squeeze(1)
    s = x[keep] - (i[keep].to(xy.dtype) + 0.5)  # crossing, measured from the left centre, in [0,1)
    d = torch.where(right[keep], 1.0 - s, s)
    return pin[keep], pout[keep], d


def antialias_torch(image: torch.Tensor, frags: Fragments, topo: Topology | None = None,
                    occlusion_tolerance: float = 0.05, near: float = 1e-3) -> torch.Tensor:
    """Silhouette antialiasing (see the module doc) of an image (B,H,W,C) rasterized as `frags`."""
    topo = topo or mesh_topology(frags.faces)
    b, h, w = frags.shape
    out = []
    for v in range(b):
        xy, wv = frags.xy[v], frags.w[v]
        idx, fin = silhouette_edges(xy.detach(), wv.detach(), frags.faces, topo, near)
        edges = topo.edges[idx]
        img = image[v]
        delta = torch.zeros_like(img)
        for transpose in (False, True):
            pxy = xy[:, [1, 0]] if transpose else xy
            fid = frags.face_id[v].t() if transpose else frags.face_id[v]
            dep = frags.depth[v].t() if transpose else frags.depth[v]
            im = (img.transpose(0, 1) if transpose else img).reshape(-1, img.shape[-1])
            pin, pout, d = _edge_pairs(pxy, wv, frags.faces, edges, fin, fid, dep, occlusion_tolerance)
            c_in, c_out = im[pin], im[pout]
            grow = (d - 0.5).clamp_min(0)[:, None]  # inside colour spills into the outside pixel
            shrink = (0.5 - d).clamp_min(0)[:, None]  # outside colour spills into the inside pixel
            dl = torch.zeros_like(im).index_add(0, pout, grow * (c_in - c_out)).index_add(0, pin,
                                                                                       shrink * (c_out - c_in))
            dl = dl.reshape(fid.shape[0], fid.shape[1], -1)
            delta = delta + (dl.transpose(0, 1) if transpose else dl)
        out.append(img + delta)
    return torch.stack(out)


# --- nvdiffrast backend ----------------------------------------------------------------------------------------
def nvdiffrast_available() -> bool:
    """Whether nvdiffrast imports and CUDA is present (imported lazily, never at module import)."""
    if not torch.cuda.is_available():
        return False
    try:
        importlib.import_module("nvdiffrast.torch")
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def clip_space(xy: torch.Tensor, w: torch.Tensor, height: int, width: int, near: float = 0.05,
               far: float = 100.0) -> torch.Tensor:
    """OpenGL clip coordinates (B,V,4) whose viewport maps onto our pixel grid with image row 0 at ndc y = −1
    (nvdiffrast's first output row), so rows need no flip."""
    x_ndc = 2.0 * xy[..., 0] / width - 1.0
    y_ndc = 2.0 * xy[..., 1] / height - 1.0
    z_clip = (far + near) / (far - near) * w - 2.0 * far * near / (far - near)
    return torch.stack([x_ndc * w, y_ndc * w, z_clip, w], -1)


class _Nvdiffrast:
    """nvdiffrast's rasterize / antialias behind the `Fragments` interface (CUDA only)."""

    def __init__(self) -> None:
        import nvdiffrast.torch as dr

        self.dr = dr
        self.ctx = dr.RasterizeCudaContext()

    def rasterize(self, vertices, faces, cams, height, width) -> Fragments:
        xy, w = project(vertices, cams, height, width)
        clip = clip_space(xy, w, height, width).float().contiguous()
        tri = faces.int().contiguous()
        rast, _ = self.dr.rasterize(self.ctx, clip, tri, (height, width))
        face_id = rast[..., 3].long() - 1
        flat = rast.reshape(-1, 4)
        pix = (face_id.reshape(-1) >= 0).nonzero().squeeze(1)
        u, v = flat[pix, 0], flat[pix, 1]
        bary = torch.stack([u, v, 1.0 - u - v], -1).to(xy.dtype)  # nvdiffrast: a = u·a0 + v·a1 + (1-u-v)·a2
        depth = torch.full(face_id.shape, math.inf, device=xy.device, dtype=xy.dtype)
        return Fragments(face_id, depth, pix, bary, xy, w, faces, "nvdiffrast", {"rast": rast, "clip": clip,
                                                                                 "tri": tri})

    def antialias(self, image: torch.Tensor, frags: Fragments) -> torch.Tensor:
        e = frags.extra
        return self.dr.antialias(image.float().contiguous(), e["rast"], e["clip"], e["tri"]).to(image.dtype)


class Rasterizer:
    """Backend-agnostic rasterizer: `rasterize` -> Fragments, `antialias(image, fragments)`.

    backend: "auto" (nvdiffrast on CUDA when it imports, else torch; logged once per device), "torch",
    "nvdiffrast" (a ConfigError when unavailable). max_pairs bounds the torch backend's candidate
    (triangle, pixel) pairs per chunk.
    """

    def __init__(self, backend: str = "auto", max_pairs: int = 1 << 20, occlusion_tolerance: float = 0.05):
        if backend not in BACKENDS:
            raise ConfigError(f"unknown rasterizer backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.backend, self.max_pairs, self.occlusion_tolerance = backend, max_pairs, occlusion_tolerance
        self._resolved: dict[str, str] = {}
        self._nv: _Nvdiffrast | None = None

    def resolved_backend(self, device: torch.device) -> str:
        key = str(torch.device(device))
        if key not in self._resolved:
            if self.backend == "torch":
                choice = "torch"
            else:
                ok = torch.device(device).type == "cuda" and nvdiffrast_available()
                if self.backend == "nvdiffrast" and not ok:
                    raise ConfigError("rasterizer backend 'nvdiffrast' needs nvdiffrast and a CUDA device; "
                                      "use mesh.backend=auto or torch")
                choice = "nvdiffrast" if ok else "torch"
            log.info("rasterizer backend on %s: %s", key, choice)
            self._resolved[key] = choice
        return self._resolved[key]

    def rasterize(self, vertices: torch.Tensor, faces: torch.Tensor, cams: Cameras, height: int,
                  width: int) -> Fragments:
        """vertices (V,3) or (B,V,3) world units, faces (F,3) long -> Fragments of B views at height x width."""
        if self.resolved_backend(vertices.device) == "nvdiffrast":
            if self._nv is None:
                self._nv = _Nvdiffrast()
            return self._nv.rasterize(vertices, faces, cams, height, width)
        return rasterize_torch(vertices, faces, cams, height, width, max_pairs=self.max_pairs)

    def antialias(self, image: torch.Tensor, frags: Fragments, topo: Topology | None = None) -> torch.Tensor:
        """image (B,H,W,C) -> antialiased (B,H,W,C), differentiable w.r.t. the image and the vertices.
        topo: the mesh's edges when the caller has them (computed otherwise)."""
        if frags.backend == "nvdiffrast":
            return self._nv.antialias(image, frags)
        return antialias_torch(image, frags, topo, self.occlusion_tolerance)
