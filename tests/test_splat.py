"""The Gaussian splatting rasterizer: the torch reference against closed forms and finite differences, the C++
kernel and gsplat against the torch reference."""

from __future__ import annotations

import importlib.util
import math

import pytest
from kernel_support import built_cpu_kernel
import torch

from dream3d.cameras import make_cameras
from dream3d.errors import Dream3DError
from dream3d.render.splat import (
    cameras_to_splat,
    cpp_backend,
    rasterize_gaussians,
    resolve_backend,
)
from dream3d.render.splat.projection import project_gaussians, tile_rects
from dream3d.render.splat.reference import composite_reference

EPS2D = 0.3


def _one_camera(f: float = 60.0, cx: float = 30.3, cy: float = 21.7, dtype=torch.float32):
    """The identity world-to-camera (OpenCV: the camera at the origin looking down +z) and pinhole intrinsics."""
    k = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], k[None]


def _render(means, scales, opacities, colors, viewmats, ks, width, height, quats=None, backend="torch"):
    quats = quats if quats is not None else torch.tensor([[1.0, 0, 0, 0]]).expand(len(means), 4)
    return rasterize_gaussians(means, quats, scales, opacities, colors, viewmats, ks, width, height,
                               eps2d=EPS2D, backend=backend)


def random_scene(seed: int, n: int = 60, width: int = 40, height: int = 28, dtype=torch.float32) -> dict:
    """A scene of overlapping Gaussians around the origin seen by 3 cameras, with the hard cases mixed in:
    behind the first camera, at its centre, far off-screen, tiny, flat, and a stack of near-opaque ones
    (early termination)."""
    gen = torch.Generator().manual_seed(seed)
    cams = make_cameras([10.0, 30.0, -5.0], [0.0, 100.0, -150.0])
    viewmats, ks = cameras_to_splat(cams, height, width)
    means = (torch.rand(n, 3, generator=gen) * 2 - 1) * 0.6
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.02), math.log(0.25), generator=gen))
    quats = torch.randn(n, 4, generator=gen)
    opacities = torch.rand(n, generator=gen) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=gen)
    eye, back = cams.c2w[0, :3, 3], cams.c2w[0, :3, 2]  # camera 0's centre and its backward axis
    means[0], means[1] = eye + 0.5 * back, eye  # behind the camera, at its centre
    means[2] = torch.tensor([25.0, 0.0, 0.0])  # off-screen in camera 0
    scales[3] = 1e-7  # tiny: the low-pass dilation makes a dot of it
    scales[4] = torch.tensor([0.2, 0.2, 1e-9])  # flat
    means[5:8] = torch.tensor([[0.0, 0.0, 0.3], [0.0, 0.0, 0.2], [0.0, 0.0, 0.1]])  # a near-opaque stack
    scales[5:8], opacities[5:8] = 0.3, 0.995
    return dict(means=means.to(dtype), quats=quats.to(dtype), scales=scales.to(dtype),
                opacities=opacities.to(dtype), colors=colors.to(dtype), viewmats=viewmats.to(dtype),
                Ks=ks.to(dtype), width=width, height=height)


PARAMS = ("means", "quats", "scales", "opacities", "colors")


def _loss_fn(scene: dict, backend: str, seed: int = 1):
    """f(means, quats, scales, opacities, colors) -> a scalar: fixed random weights of rgb, alpha and depth."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = scene["viewmats"].shape[0], scene["height"], scene["width"]
    dtype = scene["means"].dtype
    weights = [torch.randn(c, h, w, k, generator=gen).to(dtype) for k in (3, 1, 1)]

    def loss(*params):
        out = rasterize_gaussians(*params, scene["viewmats"], scene["Ks"], w, h, backend=backend)
        return sum((o * wt).sum() for o, wt in zip((out.rgb, out.alpha, out.depth), weights))

    return loss


def assert_gradients_match_finite_differences(loss, params: tuple, directions: int = 3, eps: float = 1e-6) -> None:
    """For each parameter tensor, the autograd gradient along random directions equals the float64 central
    finite difference of `loss` along them."""
    grads = torch.autograd.grad(loss(*params), params)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for i, (p, g) in enumerate(zip(params, grads)):
            for _ in range(directions):
                u = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                shifted = [list(params), list(params)]
                shifted[0][i], shifted[1][i] = p + eps * u, p - eps * u
                numeric = (loss(*shifted[0]) - loss(*shifted[1])) / (2 * eps)
                torch.testing.assert_close((g * u).sum(), numeric, rtol=1e-5, atol=1e-8,
                                           msg=lambda m, i=i: f"parameter {i}: {m}")


# --- torch reference -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_world", [0.05, 0.3])
def test_isotropic_gaussian_is_its_closed_form(sigma_world):
    """One isotropic Gaussian on the optical axis is the 2D Gaussian of std f*s/z (+ the dilation) at (cx, cy)."""
    f, cx, cy, z, width, height = 60.0, 30.3, 21.7, 2.0, 64, 48
    viewmats, ks = _one_camera(f, cx, cy)
    opacity, color = 0.3, torch.tensor([0.2, 0.5, 0.9])  # opacity < 0.35: nothing beyond 3 sigma reaches 1/255
    out = _render(torch.tensor([[0.0, 0.0, z]]), torch.full((1, 3), sigma_world), torch.tensor([opacity]),
                  color[None], viewmats, ks, width, height)
    var = (f * sigma_world / z) ** 2 + EPS2D
    jj, ii = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    alpha = opacity * torch.exp(-0.5 * ((ii - cx) ** 2 + (jj - cy) ** 2) / var)
    alpha = torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))
    torch.testing.assert_close(out.alpha[0, ..., 0], alpha, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.rgb[0], alpha[..., None] * color, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.depth[0, ..., 0], alpha * z, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.means2d[0, 0], torch.tensor([cx, cy]))
    assert out.radii[0, 0] == math.ceil(3 * math.sqrt(var))


def test_near_opaque_gaussian_hides_a_far_one_whatever_the_input_order():
    viewmats, ks = _one_camera(cx=16.5, cy=16.5)  # the centre of pixel (16, 16)
    means = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])  # near red, far green
    scales = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    opacities = torch.tensor([1.0, 0.8])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ahead = _render(means, scales, opacities, colors, viewmats, ks, 32, 32)
    flip = torch.tensor([1, 0])
    behind = _render(means[flip], scales[flip], opacities[flip], colors[flip], viewmats, ks, 32, 32)
    torch.testing.assert_close(ahead.rgb, behind.rgb)
    centre = ahead.rgb[0, 16, 16]
    # at the centre the near one is clamped to 0.99: the far one shows through the remaining 1%
    assert centre[0] > 0.985 and centre[1] < 0.0101
    # depth: 0.99 x 1 from the near one, (1 - 0.99) alpha_far x 3 = green x 3 from the far one
    torch.testing.assert_close(ahead.depth[0, 16, 16, 0], 0.99 + 3.0 * centre[1])


def test_culled_and_degenerate_gaussians_stay_finite():
    scene = random_scene(0)
    params = [scene[k].clone().requires_grad_() for k in PARAMS]
    out = rasterize_gaussians(*params, scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
                              backend="torch")
    assert out.radii[0, 0] == 0 and out.radii[0, 1] == 0 and out.radii[0, 2] == 0  # behind, at the centre, off
    assert out.radii[0, 3] > 0 and out.radii[0, 4] > 0  # tiny and flat ones are still splats (dilated)
    (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
    for t in (out.rgb, out.alpha, out.depth, *[p.grad for p in params], out.means2d.grad):
        assert torch.isfinite(t).all()
    assert (out.means2d.grad[0, :3] == 0).all()  # culled in camera 0: no gradient from it


def test_early_termination_leaves_out_what_is_behind_an_opaque_stack():
    viewmats, ks = _one_camera(cx=8.5, cy=8.5)  # the centre of pixel (8, 8)
    means = torch.tensor([[0.0, 0.0, z] for z in (1.0, 1.1, 1.2, 1.3, 1.4)])
    out = _render(means, torch.full((5, 3), 0.5), torch.full((5,), 0.95), torch.eye(5), viewmats, ks, 16, 16)
    # T after three at alpha 0.95 is 1.25e-4; a fourth would take it to 6.25e-6 < 1e-4: it and the fifth are out
    torch.testing.assert_close(out.rgb[0, 8, 8], torch.tensor([0.95, 0.05 * 0.95, 0.0025 * 0.95, 0.0, 0.0]))
    torch.testing.assert_close(out.alpha[0, 8, 8, 0], torch.tensor(1 - 1.25e-4))


def test_cameras_to_splat_projects_a_point_as_by_hand():
    height, width = 48, 64
    cams = make_cameras([0.0, 0.0], [0.0, 90.0], distance=3.0, fov_deg=40.0)
    viewmats, ks = cameras_to_splat(cams, height, width)
    f = 0.5 * height / math.tan(math.radians(20.0))
    # azimuth 0: the camera at (0,0,3) looks down -z, x to the right, y up; azimuth 90: at (3,0,0), -z to the right
    for cam, point, (x_cam, y_cam, depth) in ((0, [0.5, 0.25, 0.0], (0.5, 0.25, 3.0)),
                                              (1, [0.0, 0.25, -0.5], (0.5, 0.25, 3.0)),
                                              (1, [1.0, -0.4, 0.2], (-0.2, -0.4, 2.0))):
        p = viewmats[cam] @ torch.tensor(point + [1.0])
        torch.testing.assert_close(p[2], torch.tensor(depth), atol=1e-5, rtol=0)
        uv = (ks[cam] @ p[:3])[:2] / p[2]
        want = torch.tensor([width / 2 + f * x_cam / depth, height / 2 - f * y_cam / depth])
        torch.testing.assert_close(uv, want, atol=1e-4, rtol=0)


def test_reference_gradients_match_float64_finite_differences():
    scene = random_scene(2, n=14, width=24, height=20, dtype=torch.float64)
    params = tuple(scene[k].clone().requires_grad_() for k in PARAMS)
    assert_gradients_match_finite_differences(_loss_fn(scene, "torch"), params)


def test_compositor_gradients_match_finite_differences_and_fill_means2d_grad():
    """The compositor alone (the part the C++ kernel replaces), w.r.t. means2d, conics, opacities and features;
    and rasterize_gaussians leaves the gradient w.r.t. means2d on out.means2d."""
    scene = random_scene(3, n=14, width=24, height=20, dtype=torch.float64)
    splats = project_gaussians(scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"],
                               24, 20)
    rects = tile_rects(splats.means2d, splats.radii, 24, 20)
    features = torch.cat([scene["colors"][None].expand(3, -1, -1), splats.depths[..., None]], -1)
    inputs = tuple(t.detach().clone().requires_grad_() for t in
                   (splats.means2d, splats.conics, scene["opacities"], features))
    weights = torch.randn(3, 20, 24, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def loss(m2d, con, op, feat):
        image, alpha = composite_reference(m2d, con, splats.depths, op, feat, rects, 24, 20)
        return (torch.cat([image, alpha], -1) * weights).sum()

    assert_gradients_match_finite_differences(loss, inputs)
    params = [scene[k].clone().requires_grad_() for k in PARAMS]
    out = rasterize_gaussians(*params, scene["viewmats"], scene["Ks"], 24, 20, backend="torch")
    image = torch.cat([out.rgb, out.depth, out.alpha], -1)
    (image * weights).sum().backward()
    m2d = splats.means2d.detach().requires_grad_()
    want = torch.autograd.grad(loss(m2d, splats.conics.detach(), scene["opacities"], features.detach()), m2d)[0]
    assert want.abs().sum() > 0
    torch.testing.assert_close(out.means2d.grad, want)


# --- C++ kernel against the reference ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpp_kernel():
    """The built C++ splatting kernel (building it is part of the test)."""
    return built_cpu_kernel("splat")


def _outputs(scene: dict, backend: str) -> list[torch.Tensor]:
    """rgb, alpha, depth, radii, then the gradients of a fixed random loss w.r.t. means2d and every parameter."""
    params = [scene[k].clone().requires_grad_() for k in PARAMS]
    out = rasterize_gaussians(*params, scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
                              backend=backend)
    gen = torch.Generator().manual_seed(5)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in (out.rgb, out.alpha, out.depth))
    loss.backward()
    return [out.rgb, out.alpha, out.depth, out.radii, out.means2d.grad] + [p.grad for p in params]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpp_forward_and_gradients_equal_the_reference(cpp_kernel, seed):
    """Random scenes with overlapping, behind-camera, off-screen, tiny, flat and near-opaque Gaussians: the C++
    images equal the reference's within 1e-5 and every gradient within float32 rounding of the sums."""
    scene = random_scene(seed, n=80)
    names = ["rgb", "alpha", "depth", "radii", "means2d.grad"] + [f"{k}.grad" for k in PARAMS]
    for name, got, want in zip(names, _outputs(scene, "cpp"), _outputs(scene, "torch")):
        if name in ("rgb", "alpha", "depth", "radii"):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
        else:
            scale = float(want.abs().max())
            assert scale > 0, name
            torch.testing.assert_close(got, want, atol=2e-5 * scale, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_cpp_gradients_match_float64_finite_differences(cpp_kernel):
    """In float64 the C++ backward equals the reference's to rounding, and both equal finite differences."""
    scene = random_scene(4, n=30, width=36, height=20, dtype=torch.float64)
    for got, want in zip(_outputs(scene, "cpp"), _outputs(scene, "torch")):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)
    params = tuple(scene[k].clone().requires_grad_() for k in PARAMS)
    assert_gradients_match_finite_differences(_loss_fn(scene, "cpp"), params)


def test_auto_backend_on_the_cpu_is_the_kernel_and_falls_back_to_torch(cpp_kernel, monkeypatch):
    assert resolve_backend("auto", torch.device("cpu")) == "cpp"
    monkeypatch.setattr(cpp_backend, "available", lambda: False)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("cpp", torch.device("cpu")) == "torch"
    with pytest.raises(Dream3DError, match="gsplat"):
        resolve_backend("gsplat", torch.device("cpu"))
    with pytest.raises(Dream3DError, match="unknown splatting backend"):
        resolve_backend("cuda", torch.device("cpu"))


# --- gsplat on CUDA -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("gsplat") is None,
                    reason="needs CUDA and gsplat (the [cuda] extra)")
def test_gsplat_equals_the_reference():
    """gsplat clamps alpha at 0.999 and bins tiles by its own radii; with opacities below 0.35 no splat reaches
    1/255 beyond 3 sigma nor the clamp, so the two must agree."""
    scene = random_scene(6, n=80)
    scene["opacities"] = scene["opacities"] * 0.34
    cuda = {k: v.cuda() if torch.is_tensor(v) else v for k, v in scene.items()}
    got, want = _outputs(cuda, "gsplat"), _outputs(scene, "torch")
    names = ["rgb", "alpha", "depth", "radii", "means2d.grad"] + [f"{k}.grad" for k in PARAMS]
    for name, g, w in zip(names, got, want):
        if name == "radii":
            assert ((g.cpu() > 0) == (w > 0)).float().mean() > 0.97
            continue
        scale = float(w.abs().max())
        torch.testing.assert_close(g.cpu(), w, atol=1e-4 * max(scale, 1.0), rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")


# --- the benchmark ------------------------------------------------------------------------------------------------
def test_bench_splat_times_every_backend_in_one_run(cpp_kernel, tmp_path, capsys):
    from dream3d.bench_splat import bench_splat

    report = bench_splat(gaussians=50, size=16, views=2, rounds=1, json_path=str(tmp_path / "b.json"))
    assert set(report["backends"]) == {"torch", "cpp"}
    assert all(r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 for r in report["backends"].values())
    assert "x torch" in capsys.readouterr().out and (tmp_path / "b.json").is_file()


def test_bench_splat_command_rejects_a_bad_size_in_one_line(capsys):
    from dream3d.cli import main

    assert main(["bench", "splat", "--gaussians", "0"]) == 2
    err = capsys.readouterr().err
    assert "bench splat --gaussians must be in" in err and len(err.strip().splitlines()) == 1


def test_bench_splat_rejects_an_unknown_backend_in_one_line(capsys):
    from dream3d.cli import main

    assert main(["bench", "splat", "--backends", "cpp,cuda"]) == 2
    assert "unknown splatting backend(s) cuda" in capsys.readouterr().err
