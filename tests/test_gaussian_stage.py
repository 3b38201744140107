"""The Gaussian stage: densify/prune bookkeeping (positions, scales, Adam moments), the 3DGS .ply layout and its
round trip, the density field of a known Gaussian and its mesh, a tiny generation that exports GLB + ply, and an
exact resume across a change of the Gaussian count."""

import math

import numpy as np
import pytest
import torch

from dream3d.config import load_config
from dream3d.export.gaussian_export import extract_gaussian_surface, silhouette_level
from dream3d.export.gaussian_ply import GaussianPly, read_gaussian_ply, read_ply_header, write_gaussian_ply
from dream3d.export.surface import surface_from_grid
from dream3d.geometry.gaussians import SH_C0, GaussianCloud
from dream3d.render.gaussian import GaussianRenderer
from dream3d.run_folder import RunFolder
from dream3d.trainer import Trainer

TINY = ["stage=gaussian", "device=cpu", "gaussian.backend=torch", "gaussian.num_points=60", "render.height=12",
        "render.width=12", "render.batch_size=1", "render.shading_warmup_steps=1", "preview_every=100",
        "gaussian.densify_from=2", "gaussian.densify_every=2", "gaussian.densify_until=3",
        "gaussian.densify_grad_threshold=0", "gaussian.position_lr_steps=3"]


def set_cloud(cloud: GaussianCloud, means, scales, opacities, colors=None) -> GaussianCloud:
    """Give `cloud` these Gaussians (identity rotations)."""
    n = len(means)
    with torch.no_grad():
        for name, value in (("means", torch.tensor(means)), ("log_scales", torch.tensor(scales).log()),
                            ("quats", torch.tensor([[1.0, 0, 0, 0]] * n)),
                            ("opacity_logits", torch.logit(torch.tensor(opacities))),
                            ("colors", torch.zeros(n, 3) if colors is None else torch.tensor(colors)),
                            ("sh_rest", torch.zeros(n, cloud.sh_rest.shape[1], 3))):
            getattr(cloud, name).data = value.float()
        for name in ("grad_accum", "grad_count", "max_radii"):
            setattr(cloud, name, torch.zeros(n))
    return cloud


def test_clone_split_prune_counts_positions_and_adam_state():
    cloud = set_cloud(GaussianCloud(4), means=[[0.1, 0, 0], [0, 0.2, 0], [0, 0, 0.3], [0.4, 0, 0]],
                      scales=[[0.01] * 3, [0.1] * 3, [0.01] * 3, [0.01] * 3], opacities=[0.5, 0.6, 0.7, 0.005])
    opt = torch.optim.Adam(cloud.parameters(), lr=0.01)
    for p in (cloud.means, cloud.colors):  # moments for these two; scales, rotations, opacities stay as set
        p.grad = torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) + 1
    opt.step()
    old_moment = opt.state[cloud.means]["exp_avg"].clone()
    old_means = cloud.means.detach().clone()
    # mean gradients 2, 2, 0.5, 0.5 against the threshold 1: 0 clones (small), 1 splits (large), 3 is pruned
    cloud.grad_accum.copy_(torch.tensor([4.0, 2.0, 0.5, 0.5]))
    cloud.grad_count.copy_(torch.tensor([2.0, 1.0, 1.0, 1.0]))
    counts = cloud.densify_and_prune(opt, grad_threshold=1.0, split_scale=0.04, min_opacity=0.01,
                                     max_world_scale=0.0, max_screen_fraction=0.0,
                                     generator=torch.Generator().manual_seed(7))
    assert counts == {"cloned": 1, "split": 1, "pruned": 1, "gaussians": 5}
    # rows: kept originals 0, 2 (3 pruned), the clone of 0, the two children of 1
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(7)) * 0.1  # children ~ N(mu_1, 0.1^2 I)
    expected = torch.stack([old_means[0], old_means[2], old_means[0], old_means[1] + noise[0],
                            old_means[1] + noise[1]])
    torch.testing.assert_close(cloud.means.detach(), expected)
    torch.testing.assert_close(cloud.scales[3:].detach(), torch.full((2, 3), 0.1 / 1.6))
    torch.testing.assert_close(cloud.opacities[3:].detach(), torch.full((2,), 0.6))
    moment = opt.state[cloud.means]["exp_avg"]
    torch.testing.assert_close(moment[:2], old_moment[[0, 2]])  # kept rows keep their moments
    assert moment.shape == (5, 3) and not moment[2:].any()  # new rows start at zero (3DGS)
    assert cloud.grad_accum.shape == (5,) and not cloud.grad_accum.any()
    for p in cloud.parameters():  # the same optimizer keeps stepping on the new shapes
        p.grad = torch.ones_like(p)
    opt.step()


def test_view_space_gradient_statistics_and_screen_pruning():
    cloud = set_cloud(GaussianCloud(2), means=[[0, 0, 0], [0.5, 0, 0]], scales=[[0.02] * 3] * 2, opacities=[0.5] * 2)
    grad = torch.tensor([[[0.3, 0.4], [1.0, 1.0]], [[0.6, 0.8], [2.0, 0.0]]])  # (C=2, N=2, 2) pixels
    radii = torch.tensor([[3, 0], [5, 8]])
    cloud.add_statistics(grad, radii, width=20, height=10)
    # NDC units (x W/2, y H/2), times the 2 cameras, only where visible
    g = lambda x, y: 2 * math.hypot(10 * x, 5 * y)  # noqa: E731
    torch.testing.assert_close(cloud.grad_accum, torch.tensor([g(0.3, 0.4) + g(0.6, 0.8), g(2.0, 0.0)]))
    torch.testing.assert_close(cloud.grad_count, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(cloud.max_radii, torch.tensor([5 / 20, 8 / 20]))
    counts = cloud.densify_and_prune(None, 1e9, 0.04, 0.0, 0.0, max_screen_fraction=0.3)
    assert counts["pruned"] == 1 and torch.equal(cloud.means.detach(), torch.zeros(1, 3))


def test_ply_has_the_3dgs_layout_and_round_trips(tmp_path):
    gen = torch.Generator().manual_seed(0)
    cloud = GaussianCloud(50, sh_degree=1, color="sh")
    with torch.no_grad():
        for p in cloud.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    path = write_gaussian_ply(tmp_path / "g.ply", cloud)
    data = path.read_bytes()
    count, names, offset = read_ply_header(data)
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert count == 50 and names == expected
    assert data.startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 50\nproperty float x\n")
    assert len(data) == offset + 50 * len(expected) * 4
    table = np.frombuffer(data, "<f4", offset=offset).reshape(50, -1)
    # f_rest is channel major: red's three degree-1 coefficients first
    np.testing.assert_array_equal(table[:, 9:12], cloud.sh_rest[:, :, 0].detach().numpy())
    ply = read_gaussian_ply(path)
    for name, mine in (("means", cloud.means), ("f_dc", cloud.colors), ("f_rest", cloud.sh_rest),
                       ("opacity_logits", cloud.opacity_logits), ("log_scales", cloud.log_scales),
                       ("quats", cloud.quats), ("normals", cloud.normals())):
        assert torch.equal(getattr(ply, name), mine.detach()), name


def test_sigmoid_colours_are_written_as_the_sh_of_the_same_rgb():
    cloud = GaussianCloud(8)
    with torch.no_grad():
        cloud.colors.copy_(torch.linspace(-3, 3, 24).reshape(8, 3))
    ply = GaussianPly.from_cloud(cloud)
    torch.testing.assert_close(0.5 + SH_C0 * ply.f_dc, torch.sigmoid(cloud.colors.detach()))
    assert ply.f_rest.shape == (8, 0, 3)


def test_one_isotropic_gaussian_gives_the_closed_form_field_sphere_and_level():
    s, o = 0.25, 0.9
    cloud = set_cloud(GaussianCloud(1), means=[[0.0, 0.0, 0.0]], scales=[[s] * 3], opacities=[o])
    density, colour = cloud.density_grid(64)
    c = torch.linspace(-1, 1, 65)
    r2 = sum(x.square() for x in torch.meshgrid(c, c, c, indexing="ij"))
    truth = torch.where(r2 < (3 * s) ** 2, o * torch.exp(-0.5 * r2 / s**2), torch.zeros(()))
    torch.testing.assert_close(density, truth, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(colour, density[..., None] * 0.5 * torch.ones(3))
    tau = 0.3  # density o exp(-r^2 / 2 s^2) = tau on the sphere of radius s sqrt(2 ln(o / tau))
    surface = surface_from_grid(density, tau, 1.0, smooth_iterations=0, max_faces=0)
    radius = np.linalg.norm(surface.vertices, axis=1)
    assert abs(radius.mean() - s * math.sqrt(2 * math.log(o / tau))) < 2e-3 and radius.std() < 2e-3
    # the automatic level: the splat's alpha o exp(-d^2 / 2 s^2) equals the density's maximum along the ray, so
    # the silhouettes {alpha > 0.5} and {max density > tau} agree at tau = 0.5
    renderer = GaussianRenderer(cloud, backend="torch")
    choice = silhouette_level(renderer, density)
    assert abs(choice.level - 0.5) < 0.05 and choice.silhouette_iou > 0.97
    surface, _ = extract_gaussian_surface(renderer, 64, smooth_iterations=0, max_faces=0)
    radius = np.linalg.norm(surface.vertices, axis=1).mean()
    assert abs(radius - s * math.sqrt(2 * math.log(o / choice.level))) < 3e-3


@pytest.mark.slow
def test_tiny_generation_exports_glb_obj_and_ply(tmp_path):
    import trimesh

    from dream3d.pipeline import run_generation

    cfg = load_config(None, [*TINY, "steps=3", "export.resolution=32", "export.texture_size=64",
                             "export.turntable=false", "gaussian.texture_refine_steps=3",
                             "gaussian.texture_refine_views=2", "gaussian.texture_refine_resolution=32"])
    result = run_generation(cfg, tmp_path / "run", handle_signals=False)
    run = RunFolder(tmp_path / "run")
    files = result.exported["files"]
    assert files["ply"] == run.gaussians_ply and run.glb.is_file() and run.obj.is_file()
    cloud = result.trainer.renderer.geometry
    assert cloud.num_gaussians != 60  # densified at step 2
    assert read_gaussian_ply(run.gaussians_ply).means.shape == (cloud.num_gaussians, 3)
    mesh = trimesh.load(run.glb, force="mesh")
    assert len(mesh.faces) == result.exported["stats"]["faces"] > 0
    assert "texture_refine_mse_after" in result.exported["stats"]
    _, loaded = run.load_renderer()  # the checkpoint rebuilds the densified cloud
    assert torch.equal(loaded.geometry.means, cloud.means.detach())


@pytest.mark.slow
def test_resume_after_the_gaussian_count_changed_is_exact(tmp_path):
    cfg = load_config(None, [*TINY, "steps=4", "export.enabled=false", "checkpoint_every=100"])
    ref = Trainer(cfg, tmp_path / "ref")
    assert ref.train(handle_signals=False) == "done"

    def stop_after_3(event):
        if event.kind == "step" and event.step == 3:
            first.request_stop()

    first = Trainer(cfg, tmp_path / "cut", prior=ref.prior, events=stop_after_3)
    assert first.train(handle_signals=False) == "stopped" and first.step == 3
    assert first.renderer.geometry.num_gaussians != 60  # the checkpoint holds a densified cloud
    second = Trainer(cfg, tmp_path / "cut", prior=ref.prior)
    assert second.train(handle_signals=False) == "done" and second.step == 4
    a, b = ref.renderer.state_dict(), second.renderer.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lr = [g["lr"] for g in ref.optimizer.param_groups if g.get("name") == "means"]
    assert lr == [g["lr"] for g in second.optimizer.param_groups if g.get("name") == "means"]
