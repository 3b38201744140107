"""Geometry: normals of density fields, the implicit volume (blob init, activations, gradients), backgrounds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dream3d.errors import ConfigError
from dream3d.geometry import ImplicitVolume, MLPBackground, SDFDensityField, SolidBackground
from dream3d.geometry.implicit_volume import trunc_exp
from dream3d.geometry.normals import NORMAL_TYPES
from dream3d.shapes.primitives import SPHERE_R, TORUS_R, TORUS_r

SMALL_GRID = dict(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0,
                  mlp_width=16)


# --- normals of analytic SDF-based densities ----------------------------------------------------------------------
def _near_surface(shape: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Points within ±0.03 of the surface (away from edges) and the true outward normals there."""
    delta = (torch.rand(n, 1, generator=g) - 0.5) * 0.06
    if shape == "sphere":
        nrm = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
        return nrm * (SPHERE_R + delta), nrm
    if shape == "cube":
        axis = torch.randint(3, (n,), generator=g)
        sign = torch.randint(2, (n,), generator=g).float() * 2 - 1
        nrm = F.one_hot(axis, 3).float() * sign[:, None]
        pts = (torch.rand(n, 3, generator=g) - 0.5) * 0.6  # stay away from the edges (half side 0.5)
        pts = pts * (1 - nrm.abs()) + nrm * (0.5 + delta)
        return pts, nrm
    # torus (axis y): point at angle phi on the core circle, offset along the tube's normal (theta)
    phi, theta = (torch.rand(2, n, generator=g) * 2 * math.pi)
    radial = torch.stack([torch.cos(phi), torch.zeros_like(phi), torch.sin(phi)], -1)
    nrm = radial * torch.cos(theta)[:, None] + torch.tensor([0.0, 1.0, 0.0]) * torch.sin(theta)[:, None]
    return radial * TORUS_R + nrm * (TORUS_r + delta), nrm


@pytest.mark.parametrize("normal_type", NORMAL_TYPES)
@pytest.mark.parametrize("shape", ["sphere", "cube", "torus"])
def test_sdf_density_normals_point_outward(shape, normal_type):
    g = torch.Generator().manual_seed(0)
    pts, true_n = _near_surface(shape, 256, g)
    field = SDFDensityField(shape, density_max=100.0, sharpness=0.05, normal_type=normal_type)
    n = field.normals(pts)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(256))
    assert (n * true_n).sum(-1).min() > 0.999


def test_trunc_exp_value_and_clamped_gradient():
    x = torch.tensor([-3.0, 0.0, 2.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(x.detach().clamp(max=15.0)))


# --- implicit volume -----------------------------------------------------------------------------------------------
def _volume(**kw):
    torch.manual_seed(0)
    return ImplicitVolume(**{**SMALL_GRID, **kw})


def _zero_head(vol):
    """Zero the last MLP layer: raw density = 0 and albedo logits = 0 everywhere (field = the blob alone)."""
    with torch.no_grad():
        vol.mlp[-1].weight.zero_()
        vol.mlp[-1].bias.zero_()


def test_blob_density_closed_form():
    vol = _volume(blob_density=10.0, blob_radius=0.5)
    _zero_head(vol)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.5, 0.0], [0.6, 0.6, 0.6], [1.0, -1.0, 1.0]])
    r = x.norm(dim=-1)
    torch.testing.assert_close(vol.density(x), F.softplus(10.0 * (1 - r / 0.5)))
    torch.testing.assert_close(vol.albedo(x), torch.full((5, 3), 0.5))
    exp_vol = _volume(density_activation="trunc_exp")
    _zero_head(exp_vol)
    torch.testing.assert_close(exp_vol.density(x), torch.exp(10.0 * (1 - r / 0.5)))


@pytest.mark.parametrize("normal_type", NORMAL_TYPES)
def test_blob_normals_are_radial(normal_type):
    vol = _volume(normal_type=normal_type)
    _zero_head(vol)
    g = torch.Generator().manual_seed(1)
    d = F.normalize(torch.randn(64, 3, generator=g), dim=-1)
    x = d * (0.2 + 0.6 * torch.rand(64, 1, generator=g))
    # forward differences are first order: the profile's second derivative tilts them by ~eps·|f''/f'|/2
    assert (vol.normals(x) * d).sum(-1).min() > (0.995 if normal_type == "forward_difference" else 0.9999)


@pytest.mark.parametrize("normal_type", NORMAL_TYPES)
def test_forward_matches_parts_and_fused_normals(normal_type):
    vol = _volume(normal_type=normal_type)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(100, 3, generator=g) * 2 - 1) * 0.9
    sigma, albedo = vol(x)
    assert sigma.shape == (100,) and albedo.shape == (100, 3)
    assert (sigma >= 0).all() and ((albedo > 0) & (albedo < 1)).all()
    torch.testing.assert_close(sigma, vol.density(x))
    torch.testing.assert_close(albedo, vol.albedo(x))
    s2, a2, n2 = vol.forward_with_normals(x)
    torch.testing.assert_close(s2, sigma)
    torch.testing.assert_close(a2, albedo)
    torch.testing.assert_close(n2, vol.normals(x), atol=1e-5, rtol=1e-5)
    # points outside the box are clamped onto it for the encoding: finite, no error
    assert torch.isfinite(vol.density(torch.tensor([[3.0, -2.0, 0.0]]))).all()


@pytest.mark.parametrize("normal_type", NORMAL_TYPES)
def test_normals_are_differentiable_wrt_parameters(normal_type):
    vol = _volume(normal_type=normal_type)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(64, 3, generator=g) * 2 - 1) * 0.6
    light = F.normalize(torch.tensor([0.3, 1.0, 0.5]), dim=0)
    (vol.normals(x) @ light).sum().backward()
    grads = {name: p.grad for name, p in vol.named_parameters()}
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads.values())
    assert any(name.startswith("encoding") and gr.abs().sum() > 0 for name, gr in grads.items())
    assert vol.mlp[0].weight.grad.abs().sum() > 0


def test_normal_gradient_matches_a_finite_difference_of_the_loss():
    vol = _volume()
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(32, 3, generator=g) * 2 - 1) * 0.6
    light = F.normalize(torch.tensor([0.3, 1.0, 0.5]), dim=0)
    bias = vol.mlp[0].bias

    def loss() -> torch.Tensor:
        return (vol.normals(x) @ light).sum()

    loss().backward()
    analytic = bias.grad[0].item()
    h = 1e-2
    with torch.no_grad():
        bias[0] += h
        up = loss().item()
        bias[0] -= 2 * h
        down = loss().item()
        bias[0] += h
    assert analytic == pytest.approx((up - down) / (2 * h), rel=0.05, abs=1e-3)


def test_bad_settings_raise():
    from dream3d.geometry.normals import density_normals

    with pytest.raises(ValueError):
        density_normals(lambda x: x.sum(-1), torch.zeros(1, 3), "sobel")
    with pytest.raises(ConfigError):
        SDFDensityField("sphere", normal_type="sobel")
    with pytest.raises(ConfigError):
        ImplicitVolume(**SMALL_GRID, normal_type="sobel")
    with pytest.raises(ConfigError):
        ImplicitVolume(**SMALL_GRID, density_activation="relu")


# --- backgrounds ------------------------------------------------------------------------------------------------------
def test_solid_background():
    dirs = F.normalize(torch.randn(2, 4, 5, 3), dim=-1)
    bg = SolidBackground((0.1, 0.2, 0.3))
    out = bg(dirs)
    assert out.shape == (2, 4, 5, 3)
    torch.testing.assert_close(out, torch.tensor([0.1, 0.2, 0.3]).expand(2, 4, 5, 3))
    assert list(bg.parameters()) == [] and "color" in bg.state_dict()
    learn = SolidBackground((0.25, 0.5, 0.75), learnable=True)
    torch.testing.assert_close(learn(dirs)[0, 0, 0], torch.tensor([0.25, 0.5, 0.75]))
    learn(dirs).sum().backward()
    # d/dlogit sigmoid = c(1 − c), times the 40 pixels
    torch.testing.assert_close(learn.logit.grad, 40 * torch.tensor([0.25 * 0.75, 0.25, 0.75 * 0.25]))


def test_mlp_background():
    torch.manual_seed(0)
    bg = MLPBackground(n_frequencies=2, width=16)
    dirs = F.normalize(torch.randn(2, 6, 7, 3), dim=-1)
    out = bg(dirs)
    assert out.shape == (2, 6, 7, 3) and ((out > 0) & (out < 1)).all()
    assert bg.encode(dirs).shape == (2, 6, 7, 15)
    assert out.std(dim=(0, 1, 2)).min() > 1e-4  # colour depends on the direction
    out.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bg.parameters())
