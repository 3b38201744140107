"""The shapes world: SDFs against closed forms, renderer against a closed form, prompts, camera rule, metrics."""

import math

import pytest
import torch

from dream3d.cameras import FOV_DEG, make_cameras, sample_cameras, view_suffixes
from dream3d.errors import PromptError
from dream3d.shapes import COLORS, SHAPES, make_prompt, occupancy, parse_prompt, sdf, volume
from dream3d.shapes.metrics import classify_color, classify_shape, volume_iou
from dream3d.shapes.primitives import SPHERE_R
from dream3d.shapes.render import render_shapes


@pytest.mark.parametrize("shape", list(SHAPES))
def test_occupancy_volume_matches_closed_form(shape):
    res = 160
    occ = occupancy(shape, res)
    vol = occ.sum().item() * (2.0 / res) ** 3
    assert vol == pytest.approx(volume(shape), rel=0.02)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_sdf_is_distance_like(shape):
    # |grad sdf| ~ 1 away from edges (exact SDFs); points far outside are positive, the origin region inside
    g = torch.Generator().manual_seed(0)
    p = (torch.rand(4000, 3, generator=g) * 2 - 1).requires_grad_(True)
    d = sdf(shape, p)
    (grad,) = torch.autograd.grad(d.sum(), p)
    n = grad.norm(dim=-1)
    assert (n.median() - 1).abs() < 0.02
    assert n.max() < 1.0 + 1e-3
    assert (sdf(shape, torch.tensor([[0.0, 0.0, 5.0]])) > 3.5).all()


def test_shapes_are_inside_unit_cube_and_centred():
    for shape in SHAPES:
        occ = occupancy(shape, 64)
        assert not occ[0].any() and not occ[-1].any() and not occ[:, 0].any() and not occ[:, :, -1].any()


def test_sphere_silhouette_area_closed_form():
    res = 128
    cams = make_cameras([0.0, 30.0], [0.0, 100.0])
    _, mask = render_shapes(["sphere", "sphere"], ["red", "red"], cams, res, supersample=4)
    f = 0.5 * res / math.tan(math.radians(FOV_DEG) / 2)
    r_px = f * math.tan(math.asin(SPHERE_R / 3.0))
    expected = math.pi * r_px**2
    for m in mask:
        assert m.sum().item() == pytest.approx(expected, rel=0.01)


def test_render_background_white_and_lambert_range():
    cams = make_cameras([20.0], [30.0])
    rgb, mask = render_shapes(["cube"], ["blue"], cams, 32)
    bg = mask[0, 0] == 0
    assert torch.allclose(rgb[0][:, bg], torch.ones(1))
    fg = mask[0, 0] == 1
    albedo = torch.tensor(COLORS["blue"])[:, None]
    assert (rgb[0][:, fg] <= albedo + 1e-5).all()
    assert (rgb[0][:, fg] >= 0.4 * albedo - 1e-5).all()  # ambient floor


def test_wedge_front_and_back_differ():
    cams = make_cameras([20.0, 20.0], [0.0, 180.0])
    rgb, _ = render_shapes(["wedge", "wedge"], ["red", "red"], cams, 32)
    assert (rgb[0] - rgb[1]).abs().mean() > 0.02


@pytest.mark.parametrize("el,az,suffix", [(10, 0, ", front view"), (10, 44, ", front view"),
                                          (10, 46, ", side view"), (10, -90, ", side view"),
                                          (10, 136, ", back view"), (10, -179, ", back view"),
                                          (61, 0, ", overhead view"), (59, 180, ", back view")])
def test_view_suffix_rule(el, az, suffix):
    assert view_suffixes(make_cameras([el], [az])) == [suffix]


def test_prompt_grammar_roundtrip_and_errors():
    for s in SHAPES:
        for c in COLORS:
            p = parse_prompt(make_prompt(c, s, "back"))
            assert (p.color, p.shape, p.view) == (c, s, "back")
    assert parse_prompt("A Red Cube").shape == "cube"
    with pytest.raises(PromptError, match="shiny"):
        parse_prompt("a shiny red cube")
    with pytest.raises(PromptError, match="empty"):
        parse_prompt("   ")
    with pytest.raises(PromptError):
        make_prompt("pink", "cube")
    with pytest.raises(PromptError):
        make_prompt("red", "pyramid")
    with pytest.raises(PromptError):
        sdf("pyramid", torch.zeros(1, 3))


def test_image_classifiers_on_ground_truth():
    g = torch.Generator().manual_seed(3)
    cams = sample_cameras(72, generator=g)
    shapes = [s for s in SHAPES for _ in range(12)]
    colors = [list(COLORS)[i % 6] for i in range(72)]
    rgb, _ = render_shapes(shapes, colors, cams, 32)
    assert classify_color(rgb) == colors
    assert classify_shape(rgb, cams)[0] == shapes


def test_volume_iou():
    a = occupancy("sphere", 32)
    assert volume_iou(a, a) == 1.0
    assert volume_iou(a, torch.zeros_like(a)) == 0.0
