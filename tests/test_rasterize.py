"""Pure-torch rasterizer: coverage against analytic areas, exact barycentrics, silhouette gradients vs finite
differences."""

import math

import pytest
import torch
import trimesh

from dream3d.cameras import camera_rays, make_cameras
from dream3d.render.rasterize import Rasterizer, mesh_topology, project, rasterize_torch

D = 3.0  # camera distance; the world plane z = 0 is at view depth D for the camera at azimuth 0


def focal(size: int, fov: float = 40.0) -> float:
    return 0.5 * size / math.tan(math.radians(fov) / 2)


def coverage(verts, faces, cams, size, aa=True):
    r = Rasterizer("torch")
    frags = r.rasterize(verts, faces, cams, size, size)
    ones = torch.ones(frags.pix.shape[0], 1, dtype=verts.dtype)
    img = frags.to_image(ones, 0.0)
    if aa:
        img = r.antialias(img, frags)
    return img[..., 0]


def test_projection_matches_camera_rays():
    cams = make_cameras([25.0], [40.0])
    origins, dirs = camera_rays(cams, 16, 24)
    pts = origins[0] + 2.5 * dirs[0]  # points on the rays through the pixel centres
    xy, w = project(pts.reshape(-1, 3), cams, 16, 24)
    j, i = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(24) + 0.5, indexing="ij")
    assert torch.allclose(xy[0], torch.stack([i, j], -1).reshape(-1, 2), atol=1e-3)
    assert (w > 0).all()


def test_coverage_matches_projected_triangle_areas():
    """Triangles in the plane z = 0 facing the camera: projected area = world area · (f / D)²."""
    size = 128
    cams = make_cameras([0.0], [0.0], distance=D)
    gen = torch.Generator().manual_seed(0)
    scale = focal(size) / D
    for _ in range(5):
        v2 = (torch.rand(3, 2, generator=gen, dtype=torch.float64) - 0.5) * 1.8
        verts = torch.cat([v2, torch.zeros(3, 1, dtype=torch.float64)], 1)
        area_px = 0.5 * abs(float((v2[1, 0] - v2[0, 0]) * (v2[2, 1] - v2[0, 1])
                                  - (v2[2, 0] - v2[0, 0]) * (v2[1, 1] - v2[0, 1]))) * scale ** 2
        perim_px = float(sum((v2[k] - v2[(k + 1) % 3]).norm() for k in range(3))) * scale
        faces = torch.tensor([[0, 1, 2]])
        hard = float(coverage(verts, faces, cams, size, aa=False).sum())
        soft = float(coverage(verts, faces, cams, size).sum())
        # pixel-centre sampling errs by at most ~half a pixel along the boundary (plus vertex corners)
        assert abs(hard - area_px) < 0.5 * perim_px + 4, (hard, area_px)
        assert abs(soft - area_px) < 0.25 * perim_px + 4, (soft, area_px)
        assert abs(soft - area_px) / area_px < 0.02


def test_antialiased_coverage_of_a_rectangle_is_exact_away_from_corners():
    """Axis-aligned rectangle with edges at fractional pixel positions: hard coverage is off by whole rows and
    columns of pixels, the antialiased coverage by less than one pixel in total."""
    size = 64
    cams = make_cameras([0.0], [0.0], distance=D)
    s = focal(size) / D
    x0, x1, y0, y1 = 10.3, 41.8, 20.2, 50.35  # pixel coordinates of the rectangle (y down)
    wx = lambda x: (x - size / 2) / s  # noqa: E731
    wy = lambda y: -(y - size / 2) / s  # noqa: E731
    verts = torch.tensor([[wx(x0), wy(y0), 0], [wx(x1), wy(y0), 0], [wx(x1), wy(y1), 0], [wx(x0), wy(y1), 0]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 3, 2], [0, 2, 1]])  # counter-clockwise seen from +z (the camera)
    exact = (x1 - x0) * (y1 - y0)
    hard = float(coverage(verts, faces, cams, size, aa=False).sum())
    soft = coverage(verts, faces, cams, size)
    assert abs(hard - exact) > 5  # pixel-centre sampling: 31x30 centres instead of 31.5x30.15
    assert abs(float(soft.sum()) - exact) < 1.0
    # an edge column: covered fraction 1 - 0.3 of pixel column 10 (x in [10,11], edge at 10.3)
    assert torch.allclose(soft[0, 25:45, 10], torch.full((20,), 0.7, dtype=torch.float64), atol=1e-9)
    # no internal seam between the two triangles
    assert torch.allclose(soft[0, 21:50, 11:41], torch.ones(29, 30, dtype=torch.float64))


def test_sphere_silhouette_area():
    """A sphere of radius r at distance D projects to a disk of radius f·r/sqrt(D² − r²) (perspective)."""
    size, r = 96, 0.8
    ico = trimesh.creation.icosphere(subdivisions=4, radius=r)
    verts, faces = torch.tensor(ico.vertices), torch.tensor(ico.faces)
    cams = make_cameras([10.0, 50.0], [30.0, -120.0], distance=D)
    cov = coverage(verts, faces, cams, size)
    rho = focal(size) * r / math.sqrt(D ** 2 - r ** 2)
    expected = math.pi * rho ** 2
    for v in range(2):
        assert abs(float(cov[v].sum()) - expected) / expected < 0.01
    assert float(cov.min()) >= -1e-9 and float(cov.max()) <= 1 + 1e-9


def test_zbuffer_keeps_the_nearest_triangle():
    cams = make_cameras([0.0], [0.0], distance=D)
    far = [[-0.5, -0.5, -0.5], [0.5, -0.5, -0.5], [0.0, 0.5, -0.5]]
    near = [[-0.4, -0.4, 0.3], [0.4, -0.4, 0.3], [0.0, 0.4, 0.3]]
    for order in ((far, near), (near, far)):
        verts = torch.tensor(order[0] + order[1], dtype=torch.float64)
        frags = rasterize_torch(verts, torch.tensor([[0, 1, 2], [3, 4, 5]]), cams, 32, 32)
        near_id = 1 if order[0] is far else 0
        centre = frags.face_id[0, 16, 16]
        assert int(centre) == near_id
        assert abs(float(frags.depth[0, 16, 16]) - (D - 0.3)) < 1e-9


def test_barycentric_interpolation_is_exact():
    """Interpolated world positions are the ray-triangle hit points; linear attributes interpolate exactly."""
    gen = torch.Generator().manual_seed(1)
    verts = (torch.rand(12, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.6
    faces = torch.arange(12).reshape(4, 3)
    cams = make_cameras([20.0, -5.0], [15.0, 200.0], distance=D)
    size = 48
    frags = rasterize_torch(verts, faces, cams, size, size)
    assert frags.pix.shape[0] > 200
    pos = frags.interpolate(verts)
    origins, dirs = camera_rays(cams, size, size)
    o, d = origins.reshape(-1, 3).double()[frags.pix], dirs.reshape(-1, 3).double()[frags.pix]
    tri = verts[faces[frags.face_id.reshape(-1)[frags.pix]]]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    t = ((tri[:, 0] - o) * n).sum(-1) / (d * n).sum(-1)
    hit = o + t[:, None] * d
    # camera_rays is float32: compare the direction of (pos - o) with the float64 hit on the same plane
    assert torch.allclose(pos, hit, atol=2e-5)
    assert ((pos - tri[:, 0]) * n).sum(-1).abs().max() < 1e-12  # on the triangle's plane
    a = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 0.25]], dtype=torch.float64)
    attr = verts @ a + torch.tensor([0.1, -0.4], dtype=torch.float64)
    assert torch.allclose(frags.interpolate(attr), pos @ a + torch.tensor([0.1, -0.4], dtype=torch.float64),
                          atol=1e-12)
    # the z-buffer depth is the view depth of the interpolated point
    w_pix = frags.depth.reshape(-1)[frags.pix]
    c2w = cams.c2w.double()[frags.pix // (size * size)]
    w_pos = -((pos - c2w[:, :3, 3]) * c2w[:, :3, 2]).sum(-1)
    assert torch.allclose(w_pix, w_pos, atol=1e-9)


def _render(verts, faces, cams, size, weights, color, bg, aa=True):
    r = Rasterizer("torch")
    frags = r.rasterize(verts, faces, cams, size, size)
    img = frags.to_image(frags.interpolate(color), bg)
    if aa:
        img = r.antialias(img, frags, mesh_topology(faces))
    return (img * weights).sum()


@pytest.mark.parametrize("mesh", ["triangle", "sphere"])
def test_silhouette_gradients_match_finite_differences(mesh):
    """d loss / d vertices of an antialiased render vs central differences (float64). The colour is constant per
    vertex and the background constant, so without antialiasing the gradient w.r.t. positions is zero: every
    bit of it comes from the silhouette moving."""
    size = 24
    cams = make_cameras([15.0], [20.0], distance=D)
    if mesh == "triangle":
        verts = torch.tensor([[-0.7, -0.5, 0.1], [0.8, -0.3, -0.2], [0.1, 0.75, 0.2]], dtype=torch.float64)
        faces = torch.tensor([[0, 1, 2]])
    else:
        ico = trimesh.creation.icosphere(subdivisions=1, radius=0.7)
        verts, faces = torch.tensor(ico.vertices), torch.tensor(ico.faces)
    gen = torch.Generator().manual_seed(2)
    color = torch.rand(verts.shape[0], 3, generator=gen, dtype=torch.float64)
    if mesh == "triangle":
        color[:] = torch.tensor([0.9, 0.2, 0.1], dtype=torch.float64)
    bg = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    weights = torch.rand(1, size, size, 3, generator=gen, dtype=torch.float64)
    v = verts.clone().requires_grad_(True)
    _render(v, faces, cams, size, weights, color, bg).backward()
    grad = v.grad
    eps = 1e-6
    fd = torch.zeros_like(verts)
    for i in range(verts.shape[0]):
        for k in range(3):
            vp, vm = verts.clone(), verts.clone()
            vp[i, k] += eps
            vm[i, k] -= eps
            fd[i, k] = (_render(vp, faces, cams, size, weights, color, bg)
                        - _render(vm, faces, cams, size, weights, color, bg)) / (2 * eps)
    assert grad.abs().max() > 1.0  # the silhouette moves
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-6), (grad - fd).abs().max()
    if mesh == "triangle":  # hard rasterization: no positional gradient at all
        v2 = verts.clone().requires_grad_(True)
        _render(v2, faces, cams, size, weights, color, bg, aa=False).backward()
        assert v2.grad.abs().max() < 1e-12


def test_chunking_does_not_change_the_result():
    ico = trimesh.creation.icosphere(subdivisions=3, radius=0.9)
    verts, faces = torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces)
    cams = make_cameras([30.0], [10.0])
    a = rasterize_torch(verts, faces, cams, 40, 40, max_pairs=1 << 20)
    b = rasterize_torch(verts, faces, cams, 40, 40, max_pairs=97)
    assert torch.equal(a.face_id, b.face_id)


def test_unknown_backend_is_a_config_error():
    from dream3d.errors import ConfigError
    with pytest.raises(ConfigError):
        Rasterizer("opengl")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            Rasterizer("nvdiffrast").resolved_backend(torch.device("cpu"))
