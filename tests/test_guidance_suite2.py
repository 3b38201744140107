"""SDI, ISM, CSD, ASD, ESD and SDS+Perp-Neg: each against a closed form on an analytic prior (float64), the
identities between the methods, the DDIM inversion they share, and the contract every method keeps (output,
loss trick, info keys, state round trip, exact resume) on a tiny bundled-style prior.

Closed forms used (α = √ᾱ_t, σ = √(1 − ᾱ_t), λ = σ/α, x̄ = x_t/α):
- point mass at x*: ε̂(x_t) = (x_t − αx*)/σ, so with x_t = αx + σε, ε̂ = ε + (x − x*)/λ;
- Gaussian N(μ, std²): ε̂ = λ(x̄ − μ)/(std² + λ²); its probability-flow (DDIM) trajectory from x0 is
  x̄(λ) = μ + (x0 − μ)·R/std with R = √(std² + λ²), so exact DDIM inversion to t finds the noise
  κ = (x̄_t − x0)/λ = (x0 − μ)(R − std)/(std·λ) and ε̂(x_t) = λ(x0 − μ)/(std·R).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from dream3d.cameras import make_cameras
from dream3d.config import load_config
from dream3d.errors import PromptError
from dream3d.guidance.asd import ASDGuidance
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.csd import CSDGuidance
from dream3d.guidance.ddim import CLEAN, abar_at, ddim_step, ddim_walk, inversion_path
from dream3d.guidance.esd import ESDGuidance
from dream3d.guidance.ism import ISMGuidance
from dream3d.guidance.perpneg import PerpNegGuidance, view_blend
from dream3d.guidance.sdi import SDIGuidance
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.vsd import VSDGuidance
from dream3d.system import build_guidance
from tiny_models import GaussianPrior, PointMassPrior, randn64, random_targets, torch_threads

SHAPE = (3, 4, 4)
STD = 0.5
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NEW_METHODS = ["sdi", "ism", "csd", "asd", "perpneg", "esd"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: ESD's φ backward is then bitwise reproducible (the resume test needs it)."""
    with torch_threads(1):
        yield


def _randn(*shape, seed: int = 0) -> torch.Tensor:
    return randn64(*shape, seed=seed)


def _targets(*prompts: str, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_targets(SHAPE, *prompts, seed=seed)


def _batch(prompt: str = "a red cube", **kw) -> GuidanceBatch:
    return GuidanceBatch(**{"prompt": prompt, "negative_prompt": "", "total_steps": 10, **kw})


def _abar(prior, t):
    return prior.alphas_cumprod[t].double().reshape(-1, 1, 1, 1)


def _lam(prior, t):
    abar = _abar(prior, t)
    return ((1 - abar) / abar).sqrt()


def _gaussian(seed: int = 0):
    targets = _targets("a red cube", "", seed=seed)
    return targets, GaussianPrior(targets, std=STD)


# --- DDIM inversion (SDI, ISM) -------------------------------------------------------------------------------------

def test_inversion_path_nodes():
    path = inversion_path(torch.tensor([250, 90, 100]), 100)
    assert path[:, 0].tolist() == [CLEAN, 100, 200, 250]
    assert path[:, 1].tolist() == [CLEAN, 90, 90, 90] and path[:, 2].tolist() == [CLEAN, 100, 100, 100]


def test_ddim_inversion_follows_the_exact_flow_and_denoising_recovers_x0():
    """Inversion of x0 to t with the conditional prediction (no guidance) lands on the Gaussian's exact flow
    x_t = α_t(μ + (x0 − μ)R_t/std), and DDIM denoising back over the same nodes returns x0. Both are first-order
    Euler walks in λ, so the error is proportional to the step: stride 1 (every timestep) < 5e-3 of the largest
    entry for the inversion, < 1.5e-2 for the round trip; stride 10: 5 to 20 times more."""
    targets, prior = _gaussian(1)
    mu, x0 = targets["a red cube"], _randn(2, *SHAPE, seed=2)
    t = torch.tensor([400, 900])
    emb = prior.encode_text(["a red cube"] * 2)
    eps = lambda x, tt: prior.eps(x, tt, emb)  # noqa: E731
    exact = _abar(prior, t).sqrt() * (mu + (x0 - mu) * (STD ** 2 + _lam(prior, t) ** 2).sqrt() / STD)
    errors = []
    for stride in (1, 10):
        path = inversion_path(t, stride)
        x_t = ddim_walk(eps, x0, path, prior.alphas_cumprod)
        back = ddim_walk(eps, x_t, path.flip(0), prior.alphas_cumprod)
        errors.append(((x_t - exact).abs().max() / exact.abs().max(), (back - x0).abs().max() / x0.abs().max()))
    (inv1, rt1), (inv10, rt10) = errors
    assert inv1 < 5e-3 and rt1 < 1.5e-2, (inv1, rt1)
    assert 5 < inv10 / inv1 < 20 and 5 < rt10 / rt1 < 20  # first order in the step


# --- SDI -----------------------------------------------------------------------------------------------------------

def test_sdi_gradient_is_the_closed_form_with_exact_inversion():
    """s = 1, inversion unguided (scale 1) and η = 0: g = w(t)·(ε̂(x_t) − κ) = w(t)·(x0 − μ)(R − std)/(R·λ) up to
    the inversion's Euler error (1000 steps: < 3e-3 of the largest entry)."""
    targets, prior = _gaussian(3)
    mu, x0, t = targets["a red cube"], _randn(2, *SHAPE, seed=4), torch.tensor([300, 900])
    lam = _lam(prior, t)
    r = (STD ** 2 + lam ** 2).sqrt()
    expected = (1 - _abar(prior, t)) * (x0 - mu) * (r - STD) / (r * lam)
    sdi = SDIGuidance(prior, guidance_scale=1.0, weighting="sds", inversion_steps=1000, inversion_guidance_scale=1.0,
                      inversion_eta=0.0)
    g = sdi.grad(x0, t, torch.zeros_like(x0), _batch())
    assert (g - expected).abs().max() < 3e-3 * expected.abs().max()
    coarse = SDIGuidance(prior, guidance_scale=1.0, weighting="sds", inversion_steps=10, inversion_guidance_scale=1.0,
                         inversion_eta=0.0).grad(x0, t, torch.zeros_like(x0), _batch())
    assert (coarse - expected).abs().max() > 30 * (g - expected).abs().max()  # the inversion is what converges
    # the fixed point: the render at the data mean gets no gradient
    assert sdi.grad(mu.expand(2, *SHAPE).clone(), t, torch.zeros_like(x0), _batch()).abs().max() < 1e-7


def test_sdi_inversion_recovers_x0_when_denoised_and_eta_adds_noise():
    targets, prior = _gaussian(5)
    x0, t = _randn(2, *SHAPE, seed=6), torch.tensor([500, 700])
    sdi = SDIGuidance(prior, inversion_steps=1000, inversion_guidance_scale=1.0, inversion_eta=0.0)
    x_t = sdi.invert(x0, t, _batch())
    emb = prior.encode_text(["a red cube"] * 2)
    back = ddim_walk(lambda x, tt: prior.eps(x, tt, emb), x_t, inversion_path(t, 1).flip(0), prior.alphas_cumprod)
    assert (back - x0).abs().max() < 1.5e-2 * x0.abs().max()  # as the round trip of test_ddim_inversion_...
    noisy = SDIGuidance(prior, inversion_steps=1000, inversion_guidance_scale=1.0, inversion_eta=0.3).invert(
        x0, t, _batch())
    assert not torch.allclose(noisy, x_t)


def test_sdi_inversion_is_guided_by_its_own_scale():
    """The inversion's ε is ε_u + s_inv(ε_c − ε_u): with s_inv = 0 it follows the unconditional Gaussian's flow."""
    targets, prior = _gaussian(7)
    x0, t = _randn(1, *SHAPE, seed=8), torch.tensor([600])
    x_t = SDIGuidance(prior, inversion_steps=1000, inversion_guidance_scale=0.0, inversion_eta=0.0).invert(
        x0, t, _batch())
    mu0 = targets[""]
    exact = _abar(prior, t).sqrt() * (mu0 + (x0 - mu0) * (STD ** 2 + _lam(prior, t) ** 2).sqrt() / STD)
    assert (x_t - exact).abs().max() < 5e-3 * exact.abs().max()


# --- ISM -----------------------------------------------------------------------------------------------------------

def test_ism_gradient_is_the_closed_form():
    """x_s on the unconditional Gaussian's exact flow, ε_∅(x_s) = λ_s(x0 − μ_∅)/(std·R_s), x̄_t = x̄_s +
    (λ_t − λ_s)ε_∅(x_s) (one DDIM step), g = w(t)(ε_u + s(ε_c − ε_u) − ε_∅(x_s)) with the Gaussian ε at x_t.
    Inversion stride 1: < 2e-3 of the largest entry."""
    targets, prior = _gaussian(9)
    mu_c, mu_u = targets["a red cube"], targets[""]
    s, x0, t = 3.0, _randn(2, *SHAPE, seed=10), torch.tensor([300, 900])
    ism = ISMGuidance(prior, guidance_scale=s, weighting="uniform", delta_t=0.05, xs_delta_t=0.001)
    g = ism.grad(x0, t, torch.zeros_like(x0), _batch())
    ls, lt = _lam(prior, t - 50), _lam(prior, t)
    rs = (STD ** 2 + ls ** 2).sqrt()
    eps_s = ls * (x0 - mu_u) / (STD * rs)
    xbar_t = mu_u + (x0 - mu_u) * rs / STD + (lt - ls) * eps_s
    eps_c, eps_u = (lt * (xbar_t - m) / (STD ** 2 + lt ** 2) for m in (mu_c, mu_u))
    expected = eps_u + s * (eps_c - eps_u) - eps_s
    assert (g - expected).abs().max() < 2e-3 * expected.abs().max()
    coarse = ISMGuidance(prior, guidance_scale=s, weighting="uniform", delta_t=0.05, xs_delta_t=0.2).grad(
        x0, t, torch.zeros_like(x0), _batch())
    assert (coarse - expected).abs().max() > 20 * (g - expected).abs().max()


def test_ism_interval_inverts_and_denoises_back_to_x0():
    """x_t is one DDIM step from x_s with ε_∅(x_s, s): the step back with the same ε returns x_s exactly, and
    denoising x_s over the inversion's nodes (stride 1) returns x0 (< 1.5e-2 of the largest entry)."""
    targets, prior = _gaussian(11)
    x0, t = _randn(2, *SHAPE, seed=12), torch.tensor([120, 800])
    ism = ISMGuidance(prior, delta_t=0.1, xs_delta_t=0.001)
    x_s, eps_s, x_t = ism.interval(x0, t, _batch())
    s = t - 100
    emb_u = prior.encode_text([""] * 2)
    assert torch.allclose(eps_s, prior.eps(x_s, s, emb_u))
    assert torch.allclose(ddim_step(x_t, eps_s, abar_at(prior.alphas_cumprod, t), abar_at(prior.alphas_cumprod, s)),
                          x_s, rtol=1e-12, atol=1e-12)
    back = ddim_walk(lambda x, tt: prior.eps(x, tt, emb_u), x_s, inversion_path(s, 1).flip(0), prior.alphas_cumprod)
    assert (back - x0).abs().max() < 1.5e-2 * x0.abs().max()


def test_ism_interval_at_small_t_starts_at_zero():
    """t < δ_T: s = 0, so ε_∅ is asked at timestep 0 on the inversion's x_0."""
    targets, prior = _gaussian(13)
    ism = ISMGuidance(prior, delta_t=0.05)
    x0 = _randn(1, *SHAPE, seed=14)
    x_s, eps_s, x_t = ism.interval(x0, torch.tensor([30]), _batch())
    zero = torch.tensor([0])
    assert torch.allclose(eps_s, prior.eps(x_s, zero, prior.encode_text([""])), rtol=1e-12, atol=1e-12)
    assert torch.allclose(x_s, ddim_step(x0, prior.eps(x0, zero, prior.encode_text([""])), torch.ones(1),
                                         abar_at(prior.alphas_cumprod, zero)), rtol=1e-12, atol=1e-12)


# --- CSD -----------------------------------------------------------------------------------------------------------

def test_csd_on_point_masses_is_a_constant_push_between_the_targets():
    """ε_c − ε_u = (x*_u − x*_c)/λ for any x and ε: g = s·w(t)·(x*_u − x*_c)/λ."""
    targets = _targets("a red cube", "", seed=20)
    prior = PointMassPrior(targets)
    s, t = 2.0, torch.tensor([100, 600, 950])
    expected = s * (targets[""] - targets["a red cube"]).expand(3, *SHAPE) / _lam(prior, t)
    csd = CSDGuidance(prior, guidance_scale=s, normalize=False)
    for seed in (21, 22):
        g = csd.grad(_randn(3, *SHAPE, seed=seed), t, _randn(3, *SHAPE, seed=seed + 10), _batch())
        assert torch.allclose(g, expected, rtol=1e-6, atol=1e-9)
    unit = CSDGuidance(prior, guidance_scale=s).grad(_randn(3, *SHAPE, seed=23), t, _randn(3, *SHAPE), _batch())
    assert torch.allclose(unit.flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(unit, expected / expected.flatten(1).norm(dim=1).view(-1, 1, 1, 1))


def test_sds_is_noise_term_plus_s_times_csd():
    """SDS_s = w(t)(ε_u − ε) + s·CSD_1 with the same ε and t (Gaussian prior, so the terms depend on x and ε)."""
    targets, prior = _gaussian(24)
    s, x, t, noise = 7.5, _randn(3, *SHAPE, seed=25), torch.tensor([50, 500, 900]), _randn(3, *SHAPE, seed=26)
    sds = SDSGuidance(prior, guidance_scale=s).grad(x, t, noise, _batch())
    csd_1 = CSDGuidance(prior, guidance_scale=1.0, weighting="sds", normalize=False).grad(x, t, noise, _batch())
    csd_s = CSDGuidance(prior, guidance_scale=s, weighting="sds", normalize=False).grad(x, t, noise, _batch())
    x_t = _abar(prior, t).sqrt() * x + (1 - _abar(prior, t)).sqrt() * noise
    eps_u = prior.eps(x_t, t, prior.encode_text([""] * 3))
    noise_term = (1 - _abar(prior, t)) * (eps_u - noise)
    assert torch.allclose(sds, noise_term + s * csd_1, rtol=1e-6, atol=1e-9)
    assert torch.allclose(csd_s, s * csd_1, rtol=1e-6, atol=1e-9)


# --- ASD -----------------------------------------------------------------------------------------------------------

def test_asd_on_point_masses_is_the_closed_form():
    """ε̂_s(x_t) = ε + (x − x*_s)/λ_t with x*_s = x*_u + s(x*_c − x*_u), ε_c(x_t') = ε + (x − x*_c)/λ_t', so
    g = w(t)·((x − x*_s)/λ_t − (x − x*_c)/λ_t'), for every ε."""
    targets = _targets("a red cube", "", seed=30)
    prior = PointMassPrior(targets)
    s, x = 7.5, _randn(3, *SHAPE, seed=31)
    t, t_plus = torch.tensor([100, 500, 900]), torch.tensor([150, 530, 999])
    x_c, x_u = targets["a red cube"], targets[""]
    x_s = x_u + s * (x_c - x_u)
    expected = (1 - _abar(prior, t)) * ((x - x_s) / _lam(prior, t) - (x - x_c) / _lam(prior, t_plus))
    asd = ASDGuidance(prior, guidance_scale=s)
    for seed in (32, 33):
        g = asd.grad(x, t, _randn(3, *SHAPE, seed=seed), _batch(), t_plus)
        assert torch.allclose(g, expected, rtol=1e-6, atol=1e-9)
    # s = 1: mode seeking towards x*_c, (1/λ_t − 1/λ_t') > 0
    g1 = ASDGuidance(prior, guidance_scale=1.0).grad(x, t, _randn(3, *SHAPE), _batch(), t_plus)
    assert ((g1 * (x - x_c)).flatten(1).sum(1) > 0).all()


def test_asd_with_t_plus_equal_t_is_s_minus_one_times_csd():
    targets, prior = _gaussian(34)
    s, x, t, noise = 7.5, _randn(3, *SHAPE, seed=35), torch.tensor([40, 400, 980]), _randn(3, *SHAPE, seed=36)
    asd = ASDGuidance(prior, guidance_scale=s, plus_ratio=0.0).grad(x, t, noise, _batch())
    csd_1 = CSDGuidance(prior, guidance_scale=1.0, weighting="sds", normalize=False).grad(x, t, noise, _batch())
    assert torch.allclose(asd, (s - 1) * csd_1, rtol=1e-6, atol=1e-9)


def test_asd_later_timesteps():
    prior = PointMassPrior(_targets("a red cube", "", seed=37))
    asd = ASDGuidance(prior, plus_ratio=0.1, t_min=0.02)
    t = torch.tensor([20, 520, 995])
    assert asd.later_timesteps(t).tolist() == [20, 570, 999]  # 20 + 0, 520 + 50, min(995 + 97, 999)
    assert asd.later_timesteps(t, torch.tensor([0.5, 0.5, 0.0])).tolist() == [20, 545, 995]
    rgb = torch.rand(4, *SHAPE, dtype=torch.float64, requires_grad=True)
    out = asd(rgb, _batch(), step=0)
    assert out.info["t"] <= out.info["t_plus"] <= 999


# --- Perp-Neg ------------------------------------------------------------------------------------------------------

def _views(az: list[float], el: float = 10.0):
    return make_cameras([el] * len(az), az)


def test_perpneg_view_weights_are_threestudios():
    """f at the pure views (threestudio's f_fs, f_sf, f_sb, f_fsb): front 0/1.574 (front/side negatives), side
    (90°, the side–back branch) 0/1.574 (side/front; 0 to 1e-3), back 0.394/1.967 (side/front), overhead none."""
    cams = make_cameras([10.0, 10.0, 10.0, 10.0, 80.0], [0.0, 90.0, -180.0, 45.0, 0.0])
    r, between, negs, f = view_blend(cams.elevation_deg, cams.azimuth_deg)
    e = torch.exp(torch.tensor(-0.5, dtype=torch.float64))
    assert torch.allclose(f[0], torch.stack([4 * e - 2.426, torch.tensor(4 - 2.426).double()]), atol=1e-12)
    assert abs(f[0, 0]) < 1e-3 and negs[0].tolist() == [0, 1]
    assert torch.allclose(f[1], torch.tensor([0.0, 1.574], dtype=torch.float64), atol=1e-3)
    assert negs[1].tolist() == [1, 0]
    assert torch.allclose(f[2], torch.tensor([0.394, 1.967], dtype=torch.float64), atol=1e-12)
    assert negs[2].tolist() == [1, 0] and between[2].tolist() == [1, 2] and r[2] == 0.0
    assert r[3] == 0.5 and torch.equal(f[4], torch.zeros(2, dtype=torch.float64))


def test_perpneg_without_negatives_is_sds_exactly():
    targets = _targets("a red cube", seed=40)
    prior = PointMassPrior(targets, default=_randn(*SHAPE, seed=41))  # every view prompt its own target
    cams = _views([0.0, 60.0, 150.0])
    batch = _batch(cameras=cams, view_dependent=True)
    x, t, noise = _randn(3, *SHAPE, seed=42), torch.tensor([100, 500, 900]), _randn(3, *SHAPE, seed=43)
    prior.targets.update({f"a red cube{s}": _randn(*SHAPE, seed=44 + i)
                          for i, s in enumerate([", front view", ", side view", ", back view", ", overhead view"])})
    g = PerpNegGuidance(prior, guidance_scale=7.5, negative_scale=0.0, interpolate=False).grad(x, t, noise, batch)
    assert torch.equal(g, SDSGuidance(prior, guidance_scale=7.5).grad(x, t, noise, batch))
    g_on = PerpNegGuidance(prior, guidance_scale=7.5, interpolate=False).grad(x, t, noise, batch)
    assert not torch.allclose(g_on, g)


def test_perpneg_on_point_masses_pulls_towards_the_projected_target():
    """Point masses per view prompt: e_i = −(x*_i − x*_u)/λ, so ε̂ = ε + (x − x*_eff)/λ with
    x*_eff = x*_u + s·(d_pos − Σ f_i ⊥(d_i, d_pos)), d = x* − x*_u, and the interpolated positive's target
    x*_pos = r x*_a + (1 − r) x*_b. g = w(t)(x − x*_eff)/λ for every ε."""
    views = {s: _randn(*SHAPE, seed=50 + i) for i, s in enumerate(["front", "side", "back", "overhead"])}
    targets = {f"a red cube, {v} view": x for v, x in views.items()}
    targets[""] = _randn(*SHAPE, seed=49)
    prior = PointMassPrior(targets)
    s, az = 5.0, [30.0, 120.0]
    cams = _views(az)
    x, t = _randn(2, *SHAPE, seed=55), torch.tensor([300, 700])
    g = PerpNegGuidance(prior, guidance_scale=s).grad(x, t, _randn(2, *SHAPE, seed=56), _batch(cameras=cams,
                                                                                            view_dependent=True))

    def perp(a, b):
        return a - (a * b).sum() / (b * b).sum() * b

    u, fr, si, ba = targets[""], views["front"], views["side"], views["back"]
    rows = []
    for a in az:  # the closed form per camera, from the module doc's formulas
        if a < 90:
            r = 1 - a / 90
            pos = r * fr + (1 - r) * si
            negs = [(fr, 4 * math.exp(-r / 2) - 2.426), (si, 4 * math.exp(-(1 - r) / 2) - 2.426)]
        else:
            r = 2 - a / 90
            e = math.exp(-r / 2)
            pos, negs = r * si + (1 - r) * ba, [(si, e - 0.606), (fr, e + 0.967)]
        d_pos = pos - u
        rows.append(u + s * (d_pos - sum(f * perp(n - u, d_pos) for n, f in negs)))
    expected = (1 - _abar(prior, t)) * (x - torch.stack(rows)) / _lam(prior, t)
    assert torch.allclose(g, expected, rtol=1e-6, atol=1e-9)


def test_perpneg_falls_back_to_sds_with_one_notice(caplog):
    targets = _targets("a red cube", "", seed=60)
    prior = PointMassPrior(targets, default=_randn(*SHAPE, seed=61))
    x, t, noise = _randn(2, *SHAPE, seed=62), torch.tensor([200, 800]), _randn(2, *SHAPE, seed=63)
    sds = SDSGuidance(prior, guidance_scale=7.5)
    pn = PerpNegGuidance(prior, guidance_scale=7.5)
    with caplog.at_level(logging.WARNING, logger="dream3d"):
        for _ in range(2):
            assert torch.equal(pn.grad(x, t, noise, _batch()), sds.grad(x, t, noise, _batch()))  # no cameras
    assert sum("perpneg" in r.message for r in caplog.records) == 1
    prior.strict_vocabulary = True

    def check_prompt(p):
        if "view" in p:
            raise PromptError(f"unknown word in {p!r}")
    prior.check_prompt = check_prompt
    caplog.clear()
    batch = _batch(cameras=_views([0.0, 100.0]), view_dependent=True)
    with caplog.at_level(logging.WARNING, logger="dream3d"):
        assert torch.equal(pn.grad(x, t, noise, batch), sds.grad(x, t, noise, batch))
    assert any("cannot encode the view prompts" in r.message for r in caplog.records)


# --- ESD -----------------------------------------------------------------------------------------------------------

def test_esd_is_vsd_with_camera_cfg_on_phi(tiny_priors):
    """g = w(t)(ε̂_pre,s − [λ ε_φ(c) + (1 − λ) ε_φ(∅)]) with φ's two predictions replaced by known tensors; λ = 1
    is VSD bit for bit."""
    prior = tiny_priors["sd"]
    s, lam = 3.0, 0.5
    esd = ESDGuidance(prior, guidance_scale=s)
    assert esd.lora_guidance_scale == lam
    x, noise, t = _randn(2, 4, 8, 8, seed=70).float(), _randn(2, 4, 8, 8, seed=71).float(), torch.tensor([100, 800])
    cams = make_cameras([10.0, 40.0], [0.0, 170.0])
    batch = GuidanceBatch(prompt="a red cube", cameras=cams, view_dependent=True, total_steps=10)
    with_cam, without_cam = _randn(2, 4, 8, 8, seed=72).float(), _randn(2, 4, 8, 8, seed=73).float()

    def phi_eps(x_t, tt, emb, c2w, feats):
        has_cam = (c2w.abs().sum(1) > 0).view(-1, 1, 1, 1)
        return torch.where(has_cam, with_cam.repeat(c2w.shape[0] // 2, 1, 1, 1),
                           without_cam.repeat(c2w.shape[0] // 2, 1, 1, 1))
    esd.phi.eps = phi_eps
    g = esd.grad(x, t, noise, batch)
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    suffixes = [", front view", ", back view"]
    eps_c = prior.eps(x_t, t, prior.encode_text([f"a red cube{v}" for v in suffixes]))
    eps_u = prior.eps(x_t, t, prior.encode_text([""] * 2))
    expected = (1 - abar) * (eps_u + s * (eps_c - eps_u) - (lam * with_cam + (1 - lam) * without_cam))
    assert torch.allclose(g, expected, atol=1e-5)
    esd.close()
    a, b = ESDGuidance(prior, lora_guidance_scale=1.0, seed=5), VSDGuidance(prior, seed=5)
    rgb = torch.rand(2, 3, 16, 16)
    assert a(rgb, batch, 0).info == b(rgb, batch, 0).info
    a.close(), b.close()


# --- the contract every method keeps -------------------------------------------------------------------------------

def _render_batch():
    cams = make_cameras([10.0, 40.0], [0.0, 170.0])
    return GuidanceBatch(prompt="a red cube", negative_prompt="", cameras=cams, view_dependent=True, total_steps=10)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_contract_loss_trick_info_state_and_exact_resume(tiny_priors, method):
    """Through the shipped recipe on the tiny bundled prior: a scalar loss whose gradient reaches only the render,
    loss = 0.5·B·Σ(∂loss/∂rgb)² (the loss trick, through the identity encoder of a pixel prior: ∂/∂x0 = g/B),
    float info with the shared keys, and a state_dict that resumes the next step exactly."""
    prior = tiny_priors["bundled"]
    cfg = load_config(CONFIGS / f"{method}.yaml", ["steps=10"])
    guidance = build_guidance(cfg, prior)
    batch = _render_batch()
    rgb = torch.rand(2, 3, 8, 8, requires_grad=True)
    out = guidance(rgb, batch, step=0)
    out.loss.backward()
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and rgb.grad.shape == rgb.shape
    x_grad = rgb.grad * 0.5  # encode_images maps [0,1] to [-1,1]: ∂/∂rgb = 2·∂/∂x0
    assert out.loss.item() == pytest.approx(0.5 * 2 * x_grad.double().square().sum().item(), rel=1e-4)
    assert {"loss", "t", "w", "grad_norm", "guidance_scale"} <= set(out.info)
    assert all(isinstance(v, float) for v in out.info.values())
    assert all(p.grad is None for n, p in prior.unet.named_parameters() if "lora" not in n)
    assert guidance.optimized_parameters() == []
    state = {k: v.clone() for k, v in guidance.state_dict().items()}
    assert list(state)[0] == "rng_state" and (method == "esd" or list(state) == ["rng_state"])
    nxt = guidance(rgb.detach(), batch, step=1).info
    cfg.seed = 99
    again = build_guidance(cfg, prior)
    again.load_state_dict(state)
    assert again(rgb.detach(), batch, step=1).info == nxt
    for g in (guidance, again):
        if hasattr(g, "close"):
            g.close()
