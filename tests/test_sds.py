"""SDS: analytic properties with oracle and point-mass priors, and end-to-end runs on tiny diffusers priors."""

from __future__ import annotations

import pytest
import torch

from dream3d.cameras import make_cameras, view_suffixes
from dream3d.errors import PromptError
from dream3d.guidance import GuidanceBatch, SDSGuidance, WEIGHTINGS
from dream3d.guidance.sds import default_guidance_scale
from tiny_models import OraclePrior, PointMassPrior

SHAPE = (3, 4, 4)


def _targets(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a red cube": torch.randn(SHAPE, generator=gen).double(), "": torch.randn(SHAPE, generator=gen).double()}


def _batch(prompt: str = "a red cube", **kw) -> GuidanceBatch:
    return GuidanceBatch(**{"prompt": prompt, "negative_prompt": "", "total_steps": 10, **kw})


def _point_mass_grad(prior, x, t, x_star, weighting):
    """w·(α/σ)(x − x*) in float64 (the closed form, computed independently of dream3d)."""
    abar = prior.alphas_cumprod[t].double().reshape(-1, 1, 1, 1)
    if weighting == "sds":
        w = 1 - abar
    elif weighting == "uniform":
        w = torch.ones_like(abar)
    elif weighting == "fantasia3d":
        w = abar.sqrt() * (1 - abar)
    else:
        w = (1 - abar).sqrt() / abar.sqrt()
    return w * abar.sqrt() / (1 - abar).sqrt() * (x - x_star)


# --- analytic priors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 7.5, 101.0])
def test_oracle_prior_gives_zero_gradient(scale):
    prior = OraclePrior(SHAPE)
    sds = SDSGuidance(prior, guidance_scale=scale)
    gen = torch.Generator().manual_seed(4)
    x, noise = torch.randn(2, *SHAPE, generator=gen), torch.randn(2, *SHAPE, generator=gen)
    prior.noise = noise
    g = sds.grad(x, torch.tensor([30, 900]), noise, _batch())
    assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_point_mass_gradient_for_every_noise(weighting):
    """With s = 1 and a point mass at x*: g = w·(α/σ)(x − x*), whatever ε is."""
    targets = _targets()
    prior = PointMassPrior(targets)
    sds = SDSGuidance(prior, guidance_scale=1.0, weighting=weighting)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, *SHAPE, generator=gen).double()
    t = torch.tensor([20, 500, 980])
    expected = _point_mass_grad(prior, x, t, targets["a red cube"], weighting)
    for _ in range(3):
        noise = torch.randn(3, *SHAPE, generator=gen).double()
        g = sds.grad(x, t, noise, _batch())
        assert torch.allclose(g, expected, rtol=1e-5, atol=1e-8)


def test_point_mass_with_cfg_extrapolates_targets():
    """ε̂_s of two point masses is the point mass at x*_u + s(x*_c − x*_u)."""
    targets, s = _targets(1), 7.5
    prior = PointMassPrior(targets)
    sds = SDSGuidance(prior, guidance_scale=s)
    x = torch.randn(2, *SHAPE).double()
    t = torch.tensor([100, 700])
    x_star = targets[""] + s * (targets["a red cube"] - targets[""])
    g = sds.grad(x, t, torch.randn(2, *SHAPE).double(), _batch())
    assert torch.allclose(g, _point_mass_grad(prior, x, t, x_star, "sds"), rtol=1e-5, atol=1e-8)


def test_call_backpropagates_g_over_b_to_the_render():
    """End to end: rgb.grad = g/B with the point-mass g at the schedule's t (deterministic linear schedule)."""
    targets = _targets(2)
    prior = PointMassPrior(targets)
    sds = SDSGuidance(prior, guidance_scale=1.0, t_schedule="linear")
    rgb = torch.rand(2, *SHAPE, dtype=torch.float64, requires_grad=True)
    out = sds(rgb, _batch(total_steps=10), step=5)  # t = 0.98 − 0.96·0.5 = 0.5 → 500
    out.loss.backward()
    t = torch.tensor([500, 500])
    g = _point_mass_grad(prior, rgb.detach(), t, targets["a red cube"], "sds")
    assert torch.allclose(rgb.grad, g / 2, rtol=1e-5, atol=1e-10)
    assert out.info["t"] == 500.0
    assert out.loss.item() == pytest.approx(0.5 * g.square().sum().item() / 2, rel=1e-5)
    assert all(isinstance(v, float) for v in out.info.values())


def test_random_t_call_matches_closed_form():
    targets = _targets(3)
    prior = PointMassPrior(targets)
    sds = SDSGuidance(prior, guidance_scale=1.0, seed=11)
    rgb = torch.rand(1, *SHAPE, dtype=torch.float64, requires_grad=True)
    out = sds(rgb, _batch(), step=0)
    out.loss.backward()
    t = torch.tensor([int(out.info["t"])])
    assert 20 <= t.item() <= 980
    g = _point_mass_grad(prior, rgb.detach(), t, targets["a red cube"], "sds")
    assert torch.allclose(rgb.grad, g, rtol=1e-5, atol=1e-10)


def test_batched_cfg_single_call_and_prompts():
    prior = PointMassPrior(_targets(), default=torch.zeros(SHAPE).double())
    sds = SDSGuidance(prior, guidance_scale=7.5)
    cams = make_cameras([10.0, 70.0, 0.0], [0.0, 90.0, 180.0])
    rgb = torch.rand(3, *SHAPE, dtype=torch.float64)
    sds(rgb, _batch(cameras=cams, view_dependent=True, negative_prompt="blurry"), step=0)
    assert prior.eps_batches == [6]  # cond and uncond in one UNet call
    cond, uncond = prior.text_calls
    assert cond == ["a red cube" + s for s in view_suffixes(cams)]
    assert cond[1].endswith(", overhead view") and uncond == ["blurry"] * 3
    seen = prior.cameras_seen[0]  # the camera goes to both branches
    assert torch.equal(seen.elevation_deg, torch.tensor([10.0, 70.0, 0.0] * 2))
    prior.text_calls.clear()
    sds(rgb, _batch(cameras=cams), step=1)  # view_dependent defaults to False
    assert prior.text_calls[0] == ["a red cube"] * 3 and prior.text_calls[1] == [""] * 3


def test_grad_clip_and_nan_handling():
    targets = _targets(4)
    prior = PointMassPrior(targets)
    sds = SDSGuidance(prior, guidance_scale=1.0, weighting="uniform", t_schedule="linear",
                      grad_clip=[0, 0.05, 0.01, 10])
    rgb = torch.rand(2, *SHAPE, dtype=torch.float64, requires_grad=True)
    out = sds(rgb, _batch(), step=5)  # clip = 0.03
    out.loss.backward()
    g = _point_mass_grad(prior, rgb.detach(), torch.tensor([500, 500]), targets["a red cube"], "uniform")
    assert out.info["grad_clip"] == pytest.approx(0.03)
    assert (g.abs() > 0.03).any()
    assert torch.allclose(rgb.grad, g.clamp(-0.03, 0.03) / 2, rtol=1e-5)

    nan_prior = PointMassPrior(targets)
    nan_prior.eps = lambda x_t, t, emb, cameras=None: torch.full_like(x_t, float("nan"))
    rgb.grad = None
    out = SDSGuidance(nan_prior)(rgb, _batch(), step=0)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(rgb.grad, torch.zeros_like(rgb))


def test_seed_reproducibility_and_state_resume():
    prior = PointMassPrior(_targets())
    rgb = torch.rand(2, *SHAPE, dtype=torch.float64)
    a, b = SDSGuidance(prior, seed=3), SDSGuidance(prior, seed=3)
    assert a(rgb, _batch(), 0).loss.item() == b(rgb, _batch(), 0).loss.item()
    state = {k: v.clone() for k, v in a.state_dict().items()}
    nxt = a(rgb, _batch(), 1).info
    c = SDSGuidance(prior, seed=99)
    c.load_state_dict(state)
    assert c(rgb, _batch(), 1).info == nxt
    assert a.optimized_parameters() == [] and list(a.parameters()) == []


def test_empty_prompt_and_default_scale():
    prior = PointMassPrior(_targets())
    with pytest.raises(PromptError):
        SDSGuidance(prior)(torch.rand(1, *SHAPE, dtype=torch.float64), _batch(prompt="  "), 0)
    assert default_guidance_scale(prior) == 21.0  # pixel prior without metadata
    prior.recommended_cfg = 4.0
    assert SDSGuidance(prior).guidance_scale == 4.0


# --- tiny diffusers priors -----------------------------------------------------------------------------------------



@pytest.mark.parametrize("name", ["sd", "if", "bundled"])
def test_sds_on_tiny_prior_reaches_render_only(tiny_priors, name):
    prior = tiny_priors[name]
    sds = SDSGuidance(prior, guidance_scale=7.5, t_schedule="step", t_anneal_step=1)
    cams = make_cameras([10.0, 40.0], [0.0, 170.0])
    rgb = torch.rand(2, 3, 12, 12, requires_grad=True)
    out = sds(rgb, _batch("a red cube", cameras=cams, view_dependent=True), step=3)
    out.loss.backward()
    assert torch.isfinite(out.loss) and rgb.grad is not None and rgb.grad.abs().sum() > 0
    mods = [prior.unet, prior.text_encoder] + ([prior.vae] if prior.vae is not None else [])
    assert all(p.grad is None and not p.requires_grad for m in mods for p in m.parameters())
    assert {"loss", "t", "w", "grad_norm", "guidance_scale"} <= set(out.info)
    assert 20 <= out.info["t"] <= 500  # step schedule after its anneal step


def test_sds_tiny_grad_matches_separate_branches(tiny_priors):
    """The batched 2B call gives the same g as evaluating ε_c and ε_u separately with the formula."""
    prior = tiny_priors["bundled"]
    s = 3.0
    sds = SDSGuidance(prior, guidance_scale=s)
    cams = make_cameras([10.0, 40.0], [0.0, 170.0])
    gen = torch.Generator().manual_seed(6)
    x, noise = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    t = torch.tensor([200, 800])
    g = sds.grad(x, t, noise, _batch(cameras=cams))
    abar = prior.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    eps_c = prior.eps(x_t, t, prior.encode_text(["a red cube"] * 2), cams)
    eps_u = prior.eps(x_t, t, prior.encode_text([""] * 2), cams)
    expected = (1 - abar) * (eps_u + s * (eps_c - eps_u) - noise)
    assert torch.allclose(g, expected, atol=1e-4)
