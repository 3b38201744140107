"""Volume renderer: closed forms, the lattice rule, grid skipping vs dense, shading vs the shapes renderer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dream3d.cameras import AMBIENT, camera_rays, make_cameras, orbit_cameras
from dream3d.errors import ConfigError
from dream3d.geometry import ImplicitVolume, MLPBackground, SDFDensityField, SolidBackground, density_normals
from dream3d.render import OccupancyGrid, VolumeRenderer
from dream3d.render.marching import composite_weights, march, ray_aabb
from dream3d.shapes.render import render_shapes


# --- analytic fields with the geometry interface ---------------------------------------------------------------
class HardSphere(nn.Module):
    """Constant density `sigma` inside radius `radius`, 0 outside; constant albedo; radial normals."""

    def __init__(self, sigma: float, radius: float, color=(0.2, 0.5, 0.8), bound: float = 1.0):
        super().__init__()
        self.sigma, self.radius, self.bound = sigma, radius, bound
        self.register_buffer("color", torch.tensor(color))

    def density(self, x):
        return self.sigma * (x.norm(dim=-1) < self.radius).float()

    def albedo(self, x):
        return self.color.expand(x.shape[0], 3)

    def forward(self, x):
        return self.density(x), self.albedo(x)

    def normals(self, x):
        return F.normalize(x, dim=-1)


class GaussianBlob(HardSphere):
    """σ(x) = sigma · exp(−|x|² / (2 s²)): optical depth of a line at distance b is sigma·s·√(2π)·exp(−b²/2s²)."""

    def density(self, x):
        return self.sigma * torch.exp(-(x * x).sum(-1) / (2 * self.radius**2))


class BlockyField(nn.Module):
    """Density constant over each cell of a res^3 grid (so one random point per cell decides its occupancy):
    σ = 30·(1 + 0.5 sin(5 x·(1,2,3))) in cells whose centre is within `radius`, exactly 0 elsewhere."""

    def __init__(self, res: int = 16, radius: float = 0.55, bound: float = 1.0):
        super().__init__()
        self.res, self.radius, self.bound = res, radius, bound

    def inside(self, x):
        s = 2 * self.bound / self.res
        centre = (((x + self.bound) / s).floor().clamp(0, self.res - 1) + 0.5) * s - self.bound
        return centre.norm(dim=-1) < self.radius

    def density(self, x):
        wave = 1 + 0.5 * torch.sin(5 * (x * torch.tensor([1.0, 2.0, 3.0])).sum(-1))
        return 30.0 * wave * self.inside(x).float()

    def albedo(self, x):
        return torch.sigmoid(3 * x)

    def forward(self, x):
        return self.density(x), self.albedo(x)

    def normals(self, x):
        return density_normals(self.density, x, "finite_difference", 1e-3)


def _z_rays(offsets: list[float], z0: float = 3.0):
    """Rays parallel to −z from (b, 0, z0), with unit directions; light along +z."""
    o = torch.tensor([[b, 0.0, z0] for b in offsets])
    d = torch.tensor([[0.0, 0.0, -1.0]]).expand_as(o).contiguous()
    return o, d, -d


# --- marching ----------------------------------------------------------------------------------------------------
def test_ray_aabb_closed_form():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.5, 0.5, 3.0], [2.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    t_in, t_out, hit = ray_aabb(o, d, 1.0)
    assert hit.tolist() == [True, True, False, True]
    torch.testing.assert_close(t_in[[0, 1, 3]], torch.tensor([2.0, 2.0, -1.0]))
    torch.testing.assert_close(t_out[[0, 1, 3]], torch.tensor([4.0, 4.0, 1.0]))
    # a diagonal ray through the centre crosses the box over its full diagonal
    dd = F.normalize(torch.tensor([[-1.0, -1.0, -1.0]]), dim=-1)
    t_in, t_out, _ = ray_aabb(torch.tensor([[2.0, 2.0, 2.0]]), dd, 1.0)
    assert (t_out - t_in).item() == pytest.approx(2 * math.sqrt(3), abs=1e-5)


def _reference_lattice(o, d, bound, dt, jitter, grid):
    """Scalar re-statement of nerfacc's traverse_grids rule (cone_angle 0): step t from the near plane,
    keep [t, t+dt] when its midpoint lies in the box and in an occupied cell."""
    out = []
    t_in, t_out, hit = ray_aabb(o, d, bound)
    for r in range(o.shape[0]):
        if not hit[r]:
            continue
        t = float(jitter[r])
        while t + 0.5 * dt < float(t_in[r]):
            t += dt
        while t + 0.5 * dt < float(t_out[r]):
            mid = t + 0.5 * dt
            if grid is None or bool(grid.is_occupied(o[r] + mid * d[r])):
                out.append((r, mid))
            t += dt
    return out


def test_march_follows_the_nerfacc_lattice_rule():
    g = torch.Generator().manual_seed(1)
    cams = make_cameras([10.0, 50.0], [20.0, 200.0])
    o, d = (t.reshape(-1, 3) for t in camera_rays(cams, 6, 6))
    grid = OccupancyGrid(resolution=8)
    grid.occupied.copy_(torch.rand(8, 8, 8, generator=g) < 0.4)
    dt = 2 * math.sqrt(3) / 48
    jitter = torch.rand(o.shape[0], generator=g) * dt
    s = march(o, d, 1.0, dt, grid, jitter)
    ref = _reference_lattice(o.double(), d.double(), 1.0, dt, jitter.double(), grid)
    assert [r for r, _ in ref] == s.ray.tolist()
    torch.testing.assert_close(s.t_mid.double(), torch.tensor([m for _, m in ref], dtype=torch.float64),
                               atol=1e-5, rtol=0)
    assert len(ref) > 50


def test_composite_weights_match_float64_product_form():
    g = torch.Generator().manual_seed(2)
    cams = make_cameras([0.0], [0.0])
    o, d = (t.reshape(-1, 3) for t in camera_rays(cams, 4, 4))
    dt = 0.05
    s = march(o, d, 1.0, dt)
    sigma = torch.rand(s.ray.shape[0], generator=g) * 20
    w = composite_weights(sigma, s, dt)
    ref = torch.zeros_like(w, dtype=torch.float64)
    for r in range(o.shape[0]):  # T_k = Π_{j<k} (1 − α_j), α = 1 − exp(−σ dt)
        idx = (s.ray == r).nonzero()[:, 0]
        trans = 1.0
        for i in idx.tolist():
            alpha = 1.0 - math.exp(-float(sigma[i]) * dt)
            ref[i] = trans * alpha
            trans *= 1.0 - alpha
    torch.testing.assert_close(w.double(), ref, atol=1e-6, rtol=1e-5)


# --- closed forms --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [2.0, 8.0])
def test_constant_sphere_opacity_and_depth(sigma):
    radius, offsets = 0.6, [0.0, 0.2, 0.4, 0.55]
    r = VolumeRenderer(HardSphere(sigma, radius), num_samples_per_ray=512, use_occupancy=False)
    o, d, light = _z_rays(offsets)
    out = r.render_rays(o, d, light)
    dt = r.render_step_size
    for i, b in enumerate(offsets):
        chord = 2 * math.sqrt(radius**2 - b**2)
        expected = 1 - math.exp(-sigma * chord)
        assert out["opacity"][i, 0].item() == pytest.approx(expected, abs=sigma * dt)
        # expected distance of the first interaction inside a homogeneous slab [t_in, t_in + L]
        t_in, lam = 3.0 - chord / 2, 1.0 / sigma
        e = math.exp(-sigma * chord)
        depth = t_in + (lam - (chord + lam) * e) / (1 - e)
        assert (out["depth"][i, 0] / out["opacity"][i, 0]).item() == pytest.approx(depth, abs=dt)
    # over the white default background, a constant albedo c gives c·opacity + (1 − opacity)
    torch.testing.assert_close(out["rgb"], out["opacity"] * torch.tensor([0.2, 0.5, 0.8]) + 1 - out["opacity"])


def test_gaussian_blob_optical_depth_is_exact():
    sigma0, s = 3.0, 0.15
    offsets = [0.0, 0.1, 0.2, 0.3]
    r = VolumeRenderer(GaussianBlob(sigma0, s), num_samples_per_ray=256, use_occupancy=False)
    o, d, light = _z_rays(offsets)
    op = r.render_rays(o, d, light)["opacity"][:, 0].double()
    tau = torch.tensor([sigma0 * s * math.sqrt(2 * math.pi) * math.exp(-b * b / (2 * s * s)) for b in offsets],
                       dtype=torch.float64)
    torch.testing.assert_close(op, 1 - torch.exp(-tau), atol=2e-5, rtol=0)


# --- occupancy grid --------------------------------------------------------------------------------------------------
def test_grid_skipping_equals_dense_sampling():
    field = BlockyField(res=16)
    cams = make_cameras([15.0, 40.0, -5.0], [0.0, 130.0, -70.0])
    dense = VolumeRenderer(field, num_samples_per_ray=64, grid_resolution=16, use_occupancy=False).eval()
    skip = VolumeRenderer(field, num_samples_per_ray=64, grid_resolution=16).eval()
    skip.update_occupancy(0, torch.Generator().manual_seed(0))
    # every cell of the field is constant-occupied, so one update finds exactly the inside cells
    c = (torch.arange(16) + 0.5) / 16 * 2 - 1
    centres = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1)
    assert torch.equal(skip.occupancy.occupied, centres.norm(dim=-1) < 0.55)
    for shading in ("albedo", "lambertian"):
        a = dense(cams, 24, 24, shading=shading)
        b = skip(cams, 24, 24, shading=shading)
        assert b.n_samples < 0.5 * a.n_samples
        for k in ("rgb", "opacity", "depth"):
            torch.testing.assert_close(getattr(a, k), getattr(b, k), atol=1e-6, rtol=1e-6)
        assert a.opacity.max() > 0.9
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    skip.train(), dense.train()
    torch.testing.assert_close(dense(cams, 16, 16, generator=g1).rgb, skip(cams, 16, 16, generator=g2).rgb,
                               atol=1e-6, rtol=1e-6)


def test_occupancy_update_is_deterministic_and_resumable():
    field = SDFDensityField("torus", density_max=50.0, sharpness=0.02)
    a = VolumeRenderer(field, grid_resolution=16, occ_warmup_steps=32, occ_update_every=4)
    ga = torch.Generator().manual_seed(3)
    for step in range(0, 40):
        a.update_occupancy(step, ga)
    assert 0.02 < a.occupancy.occupied_fraction < 0.5
    state = a.state_dict()
    assert {"occupancy.occs", "occupancy.occupied"} <= set(state)
    b = VolumeRenderer(field, grid_resolution=16, occ_warmup_steps=32, occ_update_every=4)
    b.load_state_dict(state)
    gb = torch.Generator().manual_seed(0)
    gb.set_state(ga.get_state())
    for step in range(40, 60):  # the resumed run continues exactly (post-warm-up: random cell subsets)
        assert a.update_occupancy(step, ga) == b.update_occupancy(step, gb)
    assert torch.equal(a.occupancy.occs, b.occupancy.occs)
    assert torch.equal(a.occupancy.occupied, b.occupancy.occupied)
    # ground truth: the torus' cells are occupied, the far corners are not
    assert bool(a.occupancy.is_occupied(torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])).all())
    assert not bool(a.occupancy.is_occupied(torch.tensor([[0.9, 0.9, 0.9], [0.0, 0.0, 0.0]])).any())


def test_early_stop_drops_hidden_samples_only():
    cams = make_cameras([10.0, 50.0], [0.0, 120.0])
    field = SDFDensityField("cube", "blue", density_max=200.0, sharpness=0.01)
    full = VolumeRenderer(field, early_stop_eps=0.0).eval()
    pruned = VolumeRenderer(field, early_stop_eps=1e-4).eval()
    for r in (full, pruned):
        r.update_occupancy(0, torch.Generator().manual_seed(0))
    a, b = full(cams, 24, 24, "lambertian"), pruned(cams, 24, 24, "lambertian")
    assert b.n_samples < 0.6 * a.n_samples  # the samples behind the front faces are gone
    for k in ("rgb", "opacity", "depth", "normal"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), atol=1e-4 * 4, rtol=0)  # depth: T < 1e-4 times t <= 4
    # alpha_thre is capped by the grid's mean occupancy value (nerfacc's rule): a fresh grid (occs = 0) prunes none
    fresh = VolumeRenderer(field, early_stop_eps=0.0, alpha_thre=0.5, use_occupancy=False).eval()
    dense = VolumeRenderer(field, early_stop_eps=0.0, use_occupancy=False).eval()
    assert fresh(cams, 8, 8).n_samples == dense(cams, 8, 8).n_samples
    fresh.update_occupancy(0)
    assert fresh(cams, 8, 8).n_samples < dense(cams, 8, 8).n_samples


def test_fresh_grid_is_fully_occupied():
    grid = OccupancyGrid(resolution=8)
    assert grid.occupied.all() and grid.occupied_fraction == 1.0


# --- shading -----------------------------------------------------------------------------------------------------
def _interior(mask):
    return F.max_pool2d(1 - mask, 3, 1, 1) == 0  # pixels whose 3x3 neighbourhood is fully covered


def test_lambertian_sphere_matches_shapes_renderer():
    cams = make_cameras([20.0, 60.0, -5.0], [30.0, -100.0, 170.0])
    field = SDFDensityField("sphere", "red", density_max=400.0, sharpness=0.005)
    r = VolumeRenderer(field, num_samples_per_ray=384).eval()
    out = r(cams, 32, 32, shading="lambertian")
    ref, mask = render_shapes(["sphere"] * 3, ["red"] * 3, cams, 32)
    inner = _interior(mask).expand_as(ref)
    assert inner.sum() > 3 * 3 * 150
    assert (out.rgb - ref).abs()[inner].max() < 0.03
    assert (out.opacity - 1).abs()[_interior(mask)].max() < 1e-3
    # the normal map is the sphere's normal at the ray's first hit
    o, d = camera_rays(cams, 32, 32)
    b = (o * d).sum(-1)
    t_hit = -b - torch.sqrt(b * b - ((o * o).sum(-1) - 0.36)).nan_to_num(0)
    n_true = F.normalize(o + t_hit[..., None] * d, dim=-1).permute(0, 3, 1, 2)
    cos = (F.normalize(out.normal, dim=1) * n_true).sum(1, keepdim=True)
    assert cos[_interior(mask)].min() > 0.995
    # the orientation penalty vanishes on a closed surface seen from outside (normals face the camera)
    assert out.orient.max() < 1e-2 and out.orient.mean() < 1e-4


def test_textureless_is_white_lambertian():
    cams = make_cameras([30.0], [45.0])
    kw = dict(density_max=100.0, sharpness=0.01)
    red = VolumeRenderer(SDFDensityField("cube", "red", **kw), num_samples_per_ray=96).eval()
    white = VolumeRenderer(SDFDensityField("cube", (1.0, 1.0, 1.0), **kw), num_samples_per_ray=96).eval()
    t = red(cams, 16, 16, shading="textureless")
    torch.testing.assert_close(t.rgb, white(cams, 16, 16, shading="lambertian").rgb)
    # front-lit faces are brighter than AMBIENT, and nothing is darker than AMBIENT over full opacity
    solid = t.opacity > 0.999
    assert t.rgb[solid.expand_as(t.rgb)].min() >= AMBIENT - 1e-4
    assert t.rgb[solid.expand_as(t.rgb)].max() > 0.9


def test_explicit_light_direction():
    field = HardSphere(50.0, 0.5, color=(1.0, 1.0, 1.0))
    r = VolumeRenderer(field, num_samples_per_ray=256, use_occupancy=False)
    o, d, _ = _z_rays([0.0])
    toward_camera = torch.tensor([[0.0, 0.0, 1.0]])
    away = -toward_camera
    assert r.render_rays(o, d, toward_camera, "lambertian")["rgb"][0, 0].item() == pytest.approx(1.0, abs=1e-3)
    assert r.render_rays(o, d, away, "lambertian")["rgb"][0, 0].item() == pytest.approx(AMBIENT, abs=1e-3)


# --- the implicit volume through the renderer ------------------------------------------------------------------------
SMALL_GRID = dict(n_levels=4, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0, mlp_width=16)


def test_density_blob_renders_as_its_closed_form():
    torch.manual_seed(0)
    vol = ImplicitVolume(**SMALL_GRID, blob_density=10.0, blob_radius=0.5)
    with torch.no_grad():  # zero head: σ(x) = softplus(10·(1 − |x|/0.5)) exactly
        vol.mlp[-1].weight.zero_()
        vol.mlp[-1].bias.zero_()
    offsets = [0.0, 0.2, 0.4, 0.6, 0.9]
    r = VolumeRenderer(vol, num_samples_per_ray=512, use_occupancy=False, early_stop_eps=0.0).eval()
    o, d, light = _z_rays(offsets)
    op = r.render_rays(o, d, light)["opacity"][:, 0].double()
    z = torch.linspace(-1, 1, 20001, dtype=torch.float64)  # float64 quadrature of the optical depth
    tau = torch.stack([torch.trapezoid(F.softplus(10 * (1 - torch.sqrt(b * b + z * z) / 0.5)), z) for b in offsets])
    torch.testing.assert_close(op, 1 - torch.exp(-tau), atol=2e-3, rtol=0)
    assert op[0] > 0.99 and op[-1] < 0.01


def test_fresh_implicit_volume_is_a_blob_and_trains():
    torch.manual_seed(0)
    vol = ImplicitVolume(**SMALL_GRID)
    bg = SolidBackground(learnable=True)
    r = VolumeRenderer(vol, bg)
    r.update_occupancy(0, torch.Generator().manual_seed(0))
    assert 0.02 < r.occupancy.occupied_fraction < 0.3  # the blob, not the box
    out = r(orbit_cameras(4, elevation_deg=15.0), 24, 24, shading="lambertian",
            generator=torch.Generator().manual_seed(1))
    op = out.opacity[:, 0]
    assert op[:, 10:14, 10:14].min() > 0.95  # centre
    assert op[:, :3, :].max() < 0.05 and op[:, :, :3].max() < 0.05  # image borders
    (out.rgb.mean() + out.orient.mean()).backward()
    for name, p in list(vol.named_parameters()) + [("bg", bg.logit)]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# --- backgrounds, eval helper, determinism, backends ------------------------------------------------------------------
def test_empty_scene_shows_the_background():
    cams = orbit_cameras(2)
    empty = HardSphere(0.0, 0.5)
    white = VolumeRenderer(empty)(cams, 8, 8)
    assert torch.equal(white.rgb, torch.ones(2, 3, 8, 8)) and white.opacity.abs().max() == 0
    solid = VolumeRenderer(empty, SolidBackground((0.1, 0.2, 0.3)))(cams, 8, 8)
    torch.testing.assert_close(solid.rgb, torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1).expand(2, 3, 8, 8))
    mlp = MLPBackground()
    out = VolumeRenderer(empty, mlp)(cams, 8, 8)
    _, dirs = camera_rays(cams, 8, 8)
    torch.testing.assert_close(out.rgb, mlp(dirs).permute(0, 3, 1, 2))
    over = VolumeRenderer(empty, mlp)(cams, 8, 8, bg_color=torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(over.rgb[1], torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 8, 8))
    assert over.rgb[0].abs().max() == 0


def test_render_chunked_matches_forward_and_jitter_is_seeded():
    field = SDFDensityField("cone", "green", density_max=60.0, sharpness=0.02)
    r = VolumeRenderer(field, num_samples_per_ray=64).eval()
    cams = make_cameras([25.0, 5.0], [60.0, -30.0])
    full = r(cams, 20, 20, shading="lambertian", with_normal=True)
    chunked = r.render_chunked(cams, 20, 20, shading="lambertian", chunk_rays=97)
    for k in ("rgb", "opacity", "depth", "normal"):
        torch.testing.assert_close(getattr(full, k), getattr(chunked, k), atol=1e-6, rtol=1e-5)
    assert full.n_samples == chunked.n_samples
    r.train()
    a = r(cams, 20, 20, generator=torch.Generator().manual_seed(7))
    b = r(cams, 20, 20, generator=torch.Generator().manual_seed(7))
    c = r(cams, 20, 20, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.rgb, b.rgb) and not torch.equal(a.rgb, c.rgb)
    assert (a.rgb - full.rgb).abs().mean() < 0.02  # jitter moves samples, not the picture


def test_gradients_reach_field_and_background():
    field = GaussianBlob(5.0, 0.3)
    field.sigma = nn.Parameter(torch.tensor(5.0))
    bg = SolidBackground((0.5, 0.5, 0.5), learnable=True)
    r = VolumeRenderer(field, bg, num_samples_per_ray=32)
    out = r(orbit_cameras(2), 8, 8, shading="lambertian")
    # the orientation penalty uses stop-grad weights: with parameter-free normals it has no gradient at all
    assert out.rgb.requires_grad and not out.orient.requires_grad
    out.rgb.mean().backward()
    assert field.sigma.grad is not None and field.sigma.grad.abs() > 0
    assert bg.logit.grad is not None and bg.logit.grad.abs().sum() > 0


def test_backend_selection_on_cpu():
    field = HardSphere(1.0, 0.5)
    assert VolumeRenderer(field, backend="auto").resolved_backend(torch.device("cpu")) == "torch"
    with pytest.raises(ConfigError):
        VolumeRenderer(field, backend="nerfacc").resolved_backend(torch.device("cpu"))
    with pytest.raises(ConfigError):
        VolumeRenderer(field, backend="optix")
    with pytest.raises(ValueError):
        VolumeRenderer(field)(orbit_cameras(1), 4, 4, shading="phong")
