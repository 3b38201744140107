"""Shared guidance pieces: loss trick, gradient clamping, CFG, batched branches, weightings, timestep schedules."""

from __future__ import annotations

import math

import pytest
import torch

from dream3d.cameras import make_cameras
from dream3d.errors import ConfigError
from dream3d.guidance.cfg import cfg_combine, predict_branches, tile_cameras
from dream3d.guidance.loss import grad_loss, prepare_grad, scheduled_value
from dream3d.guidance.timesteps import TimestepSchedule, linear_anneal, sqrt_anneal, to_index
from dream3d.guidance.weighting import WEIGHTINGS, weight
from tiny_models import PointMassPrior, ddpm_alphas_cumprod


# --- loss trick --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_trick_gradient_is_exactly_g_over_b(dtype):
    gen = torch.Generator().manual_seed(0)
    x = (4 * torch.randn(3, 4, 5, 5, generator=gen)).to(dtype).requires_grad_()
    g = (1e-4 * torch.randn(3, 4, 5, 5, generator=gen)).to(dtype)
    loss = grad_loss(x, g)
    loss.backward()
    assert torch.equal(x.grad, g / 3)
    # value: 0.5·Σ(x − sg(x − g))²/B, evaluated in float64 as an independent reference
    xd, gd = x.detach().double(), g.double()
    assert math.isclose(loss.item(), (0.5 * (xd - (xd - gd)).square().sum() / 3).item(), rel_tol=1e-5)


def test_loss_trick_flows_through_a_function_of_the_render():
    rgb = torch.rand(2, 3, 4, 4, requires_grad=True)
    g = torch.randn(2, 3, 4, 4)
    grad_loss(rgb * 2 - 1, g).backward()  # chain rule: d/d rgb = 2·g/B
    assert torch.allclose(rgb.grad, g, atol=1e-7)


def test_loss_trick_shape_mismatch():
    with pytest.raises(ValueError):
        grad_loss(torch.zeros(2, 3), torch.zeros(3, 2))


def test_prepare_grad_nan_inf_and_clamp():
    g = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -3.0, 0.5])
    assert torch.equal(prepare_grad(g), torch.tensor([1.0, 0.0, 0.0, 0.0, -3.0, 0.5]))
    assert torch.equal(prepare_grad(g, 0.8), torch.tensor([0.8, 0.0, 0.0, 0.0, -0.8, 0.5]))


def test_scheduled_value():
    assert scheduled_value(None, 10) is None and scheduled_value(2, 10) == 2.0
    spec = [100, 2.0, 0.5, 200]
    assert scheduled_value(spec, 0) == 2.0 and scheduled_value(spec, 100) == 2.0
    assert scheduled_value(spec, 150) == pytest.approx(1.25)
    assert scheduled_value(spec, 200) == 0.5 and scheduled_value(spec, 10_000) == 0.5


# --- CFG and batched branches ------------------------------------------------------------------------------------

def test_cfg_endpoints_and_threestudio_form():
    gen = torch.Generator().manual_seed(1)
    eps_u, eps_c = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    assert torch.equal(cfg_combine(eps_u, eps_c, 1.0), eps_c)
    assert torch.equal(cfg_combine(eps_u, eps_c, 0.0), eps_u)
    # threestudio's ε_c + 100(ε_c − ε_u) is our scale 101
    assert torch.allclose(cfg_combine(eps_u, eps_c, 101.0), eps_c + 100 * (eps_c - eps_u), atol=1e-4)


def test_predict_branches_single_call_in_order():
    shape = (3, 2, 2)
    targets = {"c": torch.randn(shape).double(), "u": torch.randn(shape).double(), "n": torch.randn(shape).double()}
    prior = PointMassPrior(targets)
    x_t = torch.randn(2, *shape).double()
    t = torch.tensor([100, 900])
    cams = make_cameras([0.0, 30.0], [10.0, 100.0])
    embs = [prior.encode_text([p] * 2) for p in ("c", "u", "n")]
    out = predict_branches(prior, x_t, t, embs, cams)
    assert prior.eps_batches == [6]  # one call with 3·B
    seen = prior.cameras_seen[0]
    assert len(seen) == 6 and torch.equal(seen.azimuth_deg, torch.tensor([10.0, 100.0] * 3))
    for o, e in zip(out, embs):
        assert torch.allclose(o, prior.eps(x_t, t, e))


def test_tile_cameras():
    cams = make_cameras([0.0, 30.0], [10.0, 100.0])
    tiled = tile_cameras(cams, 2)
    assert torch.equal(tiled.c2w, torch.cat([cams.c2w, cams.c2w]))
    assert tile_cameras(None, 3) is None
    assert tile_cameras(torch.ones(2, 5), 3).shape == (6, 5)


# --- weightings --------------------------------------------------------------------------------------------------

def test_weightings_match_formulas():
    acp = ddpm_alphas_cumprod(dtype=torch.float32)
    t = torch.tensor([0, 20, 500, 980, 999])
    abar = acp[t].double()  # the formulas in float64 on the same stored ᾱ
    a, s = abar.sqrt(), (1 - abar).sqrt()
    expected = {"sds": 1 - abar, "uniform": torch.ones_like(abar), "fantasia3d": a * s ** 2, "lambda": s / a}
    assert set(WEIGHTINGS) == set(expected)
    for name, ref in expected.items():
        w = weight(name, acp, t)
        assert w.shape == (5,) and w.dtype == torch.float32
        assert torch.allclose(w.double(), ref, rtol=1e-5), name


def test_unknown_weighting_suggests():
    with pytest.raises(ConfigError, match="did you mean 'fantasia3d'"):
        weight("fantasia", ddpm_alphas_cumprod(), torch.tensor([1]))


# --- timesteps ---------------------------------------------------------------------------------------------------

def test_constant_schedule_range_and_reproducibility():
    sched = TimestepSchedule("constant", 0.02, 0.98)
    t = sched(0, None, 20000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min().item() == 20 and t.max().item() == 980
    assert abs(t.float().mean().item() - 500) < 5
    assert torch.equal(sched(7, None, 16, torch.Generator().manual_seed(3)),
                       sched(7, None, 16, torch.Generator().manual_seed(3)))


def test_step_schedule_lowers_t_max():
    sched = TimestepSchedule("step", 0.02, 0.98, t_max_end=0.5, anneal_step=100)
    gen = torch.Generator().manual_seed(0)
    before, after = sched(99, None, 5000, gen), sched(100, None, 5000, gen)
    assert before.max().item() == 980 and after.max().item() == 500 and after.min().item() == 20


def test_sqrt_anneal_hifa():
    sched = TimestepSchedule("sqrt", 0.02, 0.98)
    assert torch.equal(sched(0, 100, 3), torch.full((3,), 980))
    assert sched(25, 100, 1).item() == 500  # 0.98 − 0.96·√0.25
    assert sched(100, 100, 1).item() == 20
    assert sqrt_anneal(64, 100, 0.1, 0.9) == pytest.approx(0.9 - 0.8 * 0.8)
    ts = [sched(s, 100, 1).item() for s in range(101)]
    assert all(a >= b for a, b in zip(ts, ts[1:]))


def test_linear_schedule_and_knots():
    sched = TimestepSchedule("linear", 0.02, 0.98)
    assert [sched(s, 10, 1).item() for s in (0, 5, 10)] == [980, 500, 20]
    knotted = TimestepSchedule("linear", knots=[(0, 0.98), (0.5, 0.5), (1, 0.2)])
    assert knotted(25, 100, 1).item() == 740 and knotted(75, 100, 1).item() == 350
    assert linear_anneal(3, 4, [(0.0, 1.0), (1.0, 0.0)]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="total_steps"):
        sched(3, None, 1)


def test_schedule_validation():
    with pytest.raises(ConfigError, match="did you mean 'sqrt'"):
        TimestepSchedule("sqr")
    with pytest.raises(ConfigError):
        TimestepSchedule("constant", 0.9, 0.1)
    with pytest.raises(ConfigError):
        TimestepSchedule("linear", knots=[(0.2, 0.9), (1.0, 0.1)])
    assert to_index(1.0, 1000) == 999 and to_index(0.0, 1000) == 0
