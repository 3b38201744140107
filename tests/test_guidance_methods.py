"""VSD, NFSD, SSD, CFD and DDS: each method's defining properties (stated in its module docstring, from its
paper) against independent closed forms (analytic priors, float64), plus one step of every method on tiny SD-,
IF- and bundled-style priors built through `dream3d.system.build_guidance` from the shipped configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dream3d.cameras import Cameras, camera_rays, make_cameras
from dream3d.config import load_config
from dream3d.errors import ConfigError, PromptError
from dream3d.guidance.cfd import CFDGuidance
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.dds import DDSGuidance
from dream3d.guidance.nfsd import NFSD_NEGATIVE_PROMPT, NFSDGuidance
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.ssd import SSDGuidance
from dream3d.guidance.surface_noise import SurfaceNoise
from dream3d.guidance.vsd import VSDGuidance
from dream3d.system import build_guidance
from tiny_models import GaussianPrior, OraclePrior, PointMassPrior, ddpm_alphas_cumprod

SHAPE = (3, 4, 4)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: φ's backward is then bitwise reproducible (the resume test needs it), and these tiny
    models run faster than with threads contending for shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _targets(*prompts: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {p: torch.randn(SHAPE, generator=gen).double() for p in prompts}


def _batch(prompt: str = "a red cube", **kw) -> GuidanceBatch:
    return GuidanceBatch(**{"prompt": prompt, "negative_prompt": "", "total_steps": 10, **kw})


def _abar(prior, t: torch.Tensor) -> torch.Tensor:
    return prior.alphas_cumprod[t].double().reshape(-1, 1, 1, 1)


def _w_sds(prior, t):
    return 1.0 - _abar(prior, t)


def _pm_eps(prior, x_t, t, x_star):
    """Point-mass ε̂ = (x_t − α x*)/σ, evaluated here independently of the prior class."""
    abar = _abar(prior, t)
    return (x_t - abar.sqrt() * x_star) / (1.0 - abar).sqrt()


# --- NFSD ----------------------------------------------------------------------------------------------------------

def test_nfsd_below_threshold_is_sds_minus_noise():
    """t < 200: SDS − NFSD = −w·ε exactly (same ε, t; the null prompt as SDS's uncond), for every ε."""
    prior = PointMassPrior(_targets("a red cube", ""), default=_randn(*SHAPE, seed=9))
    s = 7.5
    sds, nfsd = SDSGuidance(prior, guidance_scale=s), NFSDGuidance(prior, guidance_scale=s)
    x, t = _randn(3, *SHAPE, seed=1), torch.tensor([0, 120, 199])
    for seed in (2, 3):
        noise = _randn(3, *SHAPE, seed=seed)
        diff = sds.grad(x, t, noise, _batch()) - nfsd.grad(x, t, noise, _batch())
        assert torch.allclose(diff, -_w_sds(prior, t) * noise, rtol=1e-6, atol=1e-12)  # w(t) is fp32


def test_nfsd_branches_at_199_and_200_against_closed_form():
    targets = _targets("a red cube", "", "blurry", seed=4)
    prior = PointMassPrior(targets)
    s = 7.5
    nfsd = NFSDGuidance(prior, guidance_scale=s)
    x, noise, t = _randn(2, *SHAPE, seed=5), _randn(2, *SHAPE, seed=6), torch.tensor([199, 200])
    g = nfsd.grad(x, t, noise, _batch(negative_prompt="blurry"))
    assert prior.eps_batches == [6]  # prompt, empty prompt, negative prompt: one UNet call
    x_t = _abar(prior, t).sqrt() * x + (1 - _abar(prior, t)).sqrt() * noise
    e_c, e_0, e_n = (_pm_eps(prior, x_t, t, targets[p]) for p in ("a red cube", "", "blurry"))
    d_c = e_c - e_0
    expected = _w_sds(prior, t) * torch.stack([e_0[0] + s * d_c[0], e_0[1] - e_n[1] + s * d_c[1]])
    assert torch.allclose(g, expected, rtol=1e-6, atol=1e-12)


def test_nfsd_negative_equal_to_empty_prompt_leaves_the_condition_term():
    """Negative prompt = empty prompt and t ≥ 200: g = w·s·(ε_c − ε_∅)."""
    targets = _targets("a red cube", "", seed=7)
    prior = PointMassPrior(targets)
    s = 3.0
    nfsd = NFSDGuidance(prior, guidance_scale=s, negative_prompt="")
    x, noise, t = _randn(2, *SHAPE, seed=8), _randn(2, *SHAPE, seed=9), torch.tensor([200, 900])
    x_t = _abar(prior, t).sqrt() * x + (1 - _abar(prior, t)).sqrt() * noise
    e_c, e_0 = _pm_eps(prior, x_t, t, targets["a red cube"]), _pm_eps(prior, x_t, t, targets[""])
    expected = _w_sds(prior, t) * s * (e_c - e_0)
    assert torch.allclose(nfsd.grad(x, t, noise, _batch()), expected, rtol=1e-6, atol=1e-12)


def test_nfsd_threshold_scales_with_num_timesteps_and_negative_fallbacks():
    prior = PointMassPrior(_targets("a red cube", ""), alphas_cumprod=ddpm_alphas_cumprod(500))
    assert NFSDGuidance(prior).threshold_t == 100  # 200/1000 of a 500-step model
    assert NFSDGuidance(PointMassPrior(_targets("a"))).threshold_t == 200
    nfsd = NFSDGuidance(prior)
    assert nfsd.negative(_batch()) == NFSD_NEGATIVE_PROMPT and nfsd.negative(_batch(negative_prompt="ugly")) == "ugly"
    prior.strict_vocabulary = True

    def check_prompt(p):
        raise PromptError("unknown word")
    prior.check_prompt = check_prompt
    assert NFSDGuidance(prior).negative(_batch()) == ""  # the bundled prior cannot encode the paper's prompt


# --- SSD -----------------------------------------------------------------------------------------------------------

def _ssd_setup(seed=10):
    targets = _targets("a red cube", "", seed=seed)
    prior = PointMassPrior(targets)
    x, noise = _randn(3, *SHAPE, seed=seed + 1), _randn(3, *SHAPE, seed=seed + 2)
    return targets, prior, x, noise


def test_ssd_above_threshold_is_the_mode_disengaging_term():
    """t > M: g = w·(s−1)(ε_c − ε_u) = SDS_s − SDS_1 with the same ε and t (the decomposition of SDS)."""
    targets, prior, x, noise = _ssd_setup()
    s, t = 7.5, torch.tensor([801, 900, 980])
    g = SSDGuidance(prior, guidance_scale=s, threshold=0.8).grad(x, t, noise, _batch())
    sds_s = SDSGuidance(prior, guidance_scale=s).grad(x, t, noise, _batch())
    sds_1 = SDSGuidance(prior, guidance_scale=1.0).grad(x, t, noise, _batch())
    assert torch.allclose(g, sds_s - sds_1, rtol=1e-6, atol=1e-12)
    # threshold 0: every t ≥ 1 is above M; threshold 1: none is
    low_t = torch.tensor([1, 300, 500])
    g0 = SSDGuidance(prior, guidance_scale=s, threshold=0.0).grad(x, low_t, noise, _batch())
    diff = SDSGuidance(prior, guidance_scale=s).grad(x, low_t, noise, _batch()) - SDSGuidance(
        prior, guidance_scale=1.0).grad(x, low_t, noise, _batch())
    assert torch.allclose(g0, diff, rtol=1e-6, atol=1e-12)
    g1 = SSDGuidance(prior, guidance_scale=s, threshold=1.0, rescale=False).grad(x, t, noise, _batch())
    assert torch.allclose((g1 * noise).flatten(1).sum(1), torch.zeros(3, dtype=torch.float64), atol=1e-8)


def test_ssd_below_threshold_is_the_noise_orthogonal_mode_seeking_term():
    """t ≤ M without rescaling, point mass: ε_c = ε + d with d = (α/σ)(x − x*), so ε̃ = ε_c − rε is d minus its
    projection on ε: orthogonal to ε, and no longer than SDS's ε_c − ε = d."""
    targets, prior, x, noise = _ssd_setup(20)
    t = torch.tensor([20, 400, 800])
    g = SSDGuidance(prior, guidance_scale=7.5, threshold=0.8, rescale=False).grad(x, t, noise, _batch())
    abar = _abar(prior, t)
    d = (abar.sqrt() / (1 - abar).sqrt()) * (x - targets["a red cube"])
    coef = ((d * noise).flatten(1).sum(1) / noise.flatten(1).square().sum(1)).reshape(-1, 1, 1, 1)
    expected = (1 - abar) * (d - coef * noise)
    assert torch.allclose(g, expected, rtol=1e-6, atol=1e-12)
    assert torch.allclose((g * noise).flatten(1).sum(1), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    assert ((g / (1 - abar)).flatten(1).norm(dim=1) <= d.flatten(1).norm(dim=1) + 1e-12).all()


def test_ssd_rescale_and_oracle():
    targets, prior, x, noise = _ssd_setup(30)
    s, t = 7.5, torch.tensor([50, 500, 700])
    raw = SSDGuidance(prior, guidance_scale=s, rescale=False).grad(x, t, noise, _batch())
    g = SSDGuidance(prior, guidance_scale=s, rescale=True).grad(x, t, noise, _batch())
    x_t = _abar(prior, t).sqrt() * x + (1 - _abar(prior, t)).sqrt() * noise
    h = (s - 1) * (_pm_eps(prior, x_t, t, targets["a red cube"]) - _pm_eps(prior, x_t, t, targets[""]))
    w = _w_sds(prior, t).flatten()
    assert torch.allclose(g.flatten(1).norm(dim=1), w * h.flatten(1).norm(dim=1), rtol=1e-6)  # ‖g‖ = w‖h‖
    cos = torch.nn.functional.cosine_similarity(g.flatten(1), raw.flatten(1))
    assert torch.allclose(cos, torch.ones(3, dtype=torch.float64), atol=1e-9)  # same direction as w·ε̃
    oracle = OraclePrior(SHAPE)
    oracle.noise = noise
    zero = SSDGuidance(oracle, guidance_scale=s).grad(x, torch.tensor([10, 300, 990]), noise, _batch())
    assert torch.equal(zero, torch.zeros_like(zero))  # ε_c = ε: r = 1 removes it all; h = 0 above M


# --- DDS -----------------------------------------------------------------------------------------------------------

def test_dds_is_zero_for_identical_source_and_target():
    prior = PointMassPrior(_targets("a red cube", "", seed=40))
    dds = DDSGuidance(prior)
    rgb = torch.rand(2, *SHAPE, dtype=torch.float64, requires_grad=True)
    out = dds(rgb, _batch(rgb_source=rgb.detach().clone(), source_prompt="a red cube"), step=0)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(rgb.grad, torch.zeros_like(rgb))
    assert prior.eps_batches == [8]  # target/source × cond/uncond in one call
    assert 50 <= out.info["t"] <= 950


def test_dds_equals_sds_target_minus_sds_source():
    targets = _targets("a blue cube", "a red cube", "", seed=41)
    prior = PointMassPrior(targets)
    s = 7.5
    x, src = _randn(2, *SHAPE, seed=42), _randn(2, *SHAPE, seed=43)
    noise, t = _randn(2, *SHAPE, seed=44), torch.tensor([60, 700])
    g = DDSGuidance(prior, guidance_scale=s).grad(x, t, noise, _batch("a blue cube", rgb_source=src,
                                                                      source_prompt="a red cube"))
    sds = SDSGuidance(prior, guidance_scale=s, weighting="uniform")
    expected = sds.grad(x, t, noise, _batch("a blue cube")) - sds.grad(src, t, noise, _batch("a red cube"))
    assert torch.allclose(g, expected, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError):
        DDSGuidance(prior).grad(x, t, noise, _batch("a blue cube"))
    with pytest.raises(PromptError):
        DDSGuidance(prior).grad(x, t, noise, _batch("a blue cube", rgb_source=src))


# --- CFD: surface noise --------------------------------------------------------------------------------------------

def _plane_views(h: int, s: int, shift_px: int):
    """Two cameras looking down −z at the plane z = z_p, the second shifted by `shift_px` pixel footprints along +x;
    returns cameras, depth and opacity at the sub-pixel resolution (h·s), and the voxel size 2·footprint/s."""
    fov, dist = 40.0, 3.0
    foot = 2 * dist * math.tan(math.radians(fov / 2)) / h
    voxel = 2 * foot / s
    z_p = voxel / 2  # the plane sits mid-cell: rounding never flips a cell
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[:, 2, 3] = z_p + dist
    c2w[1, 0, 3] = shift_px * foot
    cams = Cameras(c2w, torch.full((2,), fov), torch.zeros(2), torch.zeros(2), torch.full((2,), dist))
    _, dirs = camera_rays(cams, h * s, h * s)
    depth = (dist / -dirs[..., 2])[:, None]
    return cams, depth, torch.ones_like(depth), voxel


def test_surface_noise_is_identical_for_a_patch_seen_from_two_views():
    h, s, k = 8, 4, 3
    cams, depth, opacity, voxel = _plane_views(h, s, k)
    field = SurfaceNoise(torch.Generator().manual_seed(0), subsamples=s, voxel_size=voxel)
    n = field((2, 3, h, h), depth, opacity, cams)
    assert torch.equal(n[1, :, :, :h - k], n[0, :, :, k:])  # same surface patch, same noise
    assert not torch.allclose(n[1], n[0])  # different patches differ


def _sphere(cams: Cameras, size: int, radius: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth and (antialiased) opacity (B,1,size,size) of a sphere at the origin, by ray casting 4×4 sub-rays."""
    o, d = camera_rays(cams, size * 4, size * 4)
    b = (o * d).sum(-1)
    disc = b ** 2 - (o.square().sum(-1) - radius ** 2)
    hit = disc > 0
    t_hit = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.zeros_like(b))
    pool = torch.nn.functional.avg_pool2d
    opacity = pool(hit.float()[:, None], 4)
    depth = pool((t_hit * hit)[:, None], 4)  # Σ w·t, as the renderer reports it
    return depth, opacity


def test_surface_noise_follows_the_surface_under_rotation():
    """A sphere seen from azimuths 0° and 30° (automatic cell size): pixels of the two views whose centres see the
    same surface point carry strongly correlated noise, while neighbouring pixels of one view are uncorrelated."""
    size = 24
    cams = make_cameras([20.0, 20.0], [0.0, 30.0])
    depth, opacity = _sphere(cams, size * 8)
    o, d = camera_rays(cams, size, size)
    pool = torch.nn.functional.avg_pool2d
    cover = pool(opacity, 8)[:, 0]
    points = o[0] + d[0] * (pool(depth, 8)[0, 0] / cover[0].clamp_min(1e-6))[..., None]  # view A pixel centres
    cam_b = torch.linalg.inv(cams.c2w[1])
    pc = points.reshape(-1, 3) @ cam_b[:3, :3].T + cam_b[:3, 3]
    focal = 0.5 * size / math.tan(math.radians(20.0))
    u, v = pc[:, 0] / -pc[:, 2] * focal + size / 2, -pc[:, 1] / -pc[:, 2] * focal + size / 2
    facing = ((cams.c2w[1, :3, 3] - points.reshape(-1, 3)) * points.reshape(-1, 3)).sum(1) > 0.1
    iu, iv = u.floor().long().clamp(0, size - 1), v.floor().long().clamp(0, size - 1)
    pairs = ((u - iu - 0.5).abs() < 0.25) & ((v - iv - 0.5).abs() < 0.25) & facing & (cover[0].reshape(-1) > 0.99)
    pairs &= cover[1][iv, iu] > 0.99
    a, b, left, right = [], [], [], []
    for seed in range(4):
        n = SurfaceNoise(torch.Generator().manual_seed(seed))((2, 4, size, size), depth, opacity, cams)
        a.append(n[0].reshape(4, -1)[:, pairs]), b.append(n[1][:, iv[pairs], iu[pairs]])
        inside = (cover[0, :, 1:] > 0.99) & (cover[0, :, :-1] > 0.99)
        left.append(n[0, :, :, 1:][:, inside]), right.append(n[0, :, :, :-1][:, inside])
    corr = lambda p, q: torch.corrcoef(torch.stack([torch.cat(p).flatten(), torch.cat(q).flatten()]))[0, 1]  # noqa
    assert pairs.sum() >= 10 and corr(a, b) > 0.5, (int(pairs.sum()), float(corr(a, b)))
    assert abs(corr(left, right)) < 0.15


def test_surface_noise_is_standard_normal_per_pixel():
    cams = make_cameras([10.0, 30.0], [0.0, 100.0])
    depth, opacity = _sphere(cams, 16)
    assert ((opacity > 0) & (opacity < 1)).any()  # soft edge pixels are covered by the test
    draws = torch.stack([SurfaceNoise(torch.Generator().manual_seed(i), subsamples=4, table_log2=12)(
        (2, 3, 8, 8), depth, opacity, cams) for i in range(300)])
    mean, var = draws.mean(0), draws.var(0)
    assert mean.abs().max() < 0.3 and (var - 1).abs().max() < 0.35  # 300 draws: ~5 standard errors
    assert abs(mean.mean()) < 0.02 and abs(var.mean() - 1) < 0.03
    one = SurfaceNoise(torch.Generator().manual_seed(1))((2, 4, 16, 16), depth, opacity, cams)
    assert abs(one.mean()) < 0.1 and abs(one.std() - 1) < 0.1


def test_surface_noise_reinjection_state_and_2d():
    gen = torch.Generator().manual_seed(3)
    field = SurfaceNoise(gen)
    flat = field((2, 3, 8, 8))  # no depth: the fixed background image for every image
    assert torch.equal(flat[0], flat[1]) and torch.equal(flat, field((2, 3, 8, 8)))
    state = {k: v.clone() for k, v in field.state_dict().items()}
    field.reinject(0.01)
    moved = field((1, 3, 8, 8))[0]
    corr = torch.corrcoef(torch.stack([moved.flatten(), flat[0].flatten()]))[0, 1]
    assert 0.95 < corr < 1.0 and abs(field.table.var() - 1) < 0.02
    restored = SurfaceNoise(torch.Generator())
    restored.load_state_dict(state)
    assert torch.equal(restored((1, 3, 8, 8))[0], flat[0])


# --- CFD: guidance -------------------------------------------------------------------------------------------------

def test_cfd_reproduces_ddim_in_xbar_coordinates():
    """Directly parameterized image, fixed ε̃, SGD with lr_k = B·(1 − λ_{t_{k+1}}/λ_{t_k}): x_k + λ_{t_k} ε̃ follows
    the DDIM (η = 0) trajectory x_{t_k}/α_{t_k} of the same prior exactly (derivation in dream3d/guidance/cfd.py)."""
    mu = _randn(*SHAPE, seed=50)
    prior = GaussianPrior({"a red cube": mu, "": torch.zeros(SHAPE, dtype=torch.float64)}, std=0.5)
    n_steps, b = 12, 2
    cfd = CFDGuidance(prior, guidance_scale=1.0, t_min=0.02, t_max=0.98)
    x = _randn(b, *SHAPE, seed=51).requires_grad_()
    ts = [int(cfd.schedule(k, n_steps, 1)) for k in range(n_steps + 1)]
    assert ts == sorted(ts, reverse=True) and ts[0] == 980 and ts[-1] == 20
    acp = prior.alphas_cumprod.double()
    lam = lambda t: ((1 - acp[t]) / acp[t]).sqrt()  # noqa: E731
    eps_tilde = cfd.noise((b, *SHAPE)).double()  # the fixed noise image (2D: no depth)
    x_t = acp[ts[0]].sqrt() * (x.detach() + lam(ts[0]) * eps_tilde)  # DDIM start point
    for k in range(n_steps):
        assert torch.allclose(x.detach() + lam(ts[k]) * eps_tilde, x_t / acp[ts[k]].sqrt(), rtol=1e-6, atol=1e-9)
        x.grad = None
        cfd(x, _batch(total_steps=n_steps), k).loss.backward()
        with torch.no_grad():
            x -= b * (1 - lam(ts[k + 1]) / lam(ts[k])) * x.grad
        # DDIM η = 0 in x space: x̂0 = (x_t − σε̂)/α, x_{t'} = α' x̂0 + σ' ε̂ (the reference trajectory)
        tt = torch.full((b,), ts[k])
        eps_hat = prior.eps(x_t, tt, prior.encode_text(["a red cube"] * b))
        x0_hat = (x_t - (1 - acp[ts[k]]).sqrt() * eps_hat) / acp[ts[k]].sqrt()
        x_t = acp[ts[k + 1]].sqrt() * x0_hat + (1 - acp[ts[k + 1]]).sqrt() * eps_hat
    assert torch.allclose(x.detach() + lam(ts[-1]) * eps_tilde, x_t / acp[ts[-1]].sqrt(), rtol=1e-6, atol=1e-9)
    assert (x.detach() - mu).abs().mean() < (_randn(b, *SHAPE, seed=51) - mu).abs().mean()


def test_cfd_uses_surface_noise_and_needs_a_deterministic_schedule():
    prior = PointMassPrior(_targets("a red cube", "", seed=60))
    with pytest.raises(ConfigError, match="deterministic"):
        CFDGuidance(prior, t_schedule="step")
    cams = make_cameras([10.0, 20.0], [0.0, 90.0])
    depth, opacity = _sphere(cams, 16)
    cfd = CFDGuidance(prior, guidance_scale=1.0, subsamples=4, reinject=[0, 0.01, 0.0001, 10])
    rgb = torch.rand(2, *SHAPE, dtype=torch.float64, requires_grad=True)
    batch = _batch(cameras=cams, depth=depth, opacity=opacity)
    out = cfd(rgb, batch, step=0)
    out.loss.backward()
    t = torch.tensor([980, 980])
    abar = _abar(prior, t)
    eps = cfd.noise((2, *SHAPE), depth, opacity, cams).double()  # the same field (re-injection ran before)
    x_t = abar.sqrt() * rgb.detach() + (1 - abar).sqrt() * eps
    lam = ((1 - abar) / abar).sqrt()
    expected = lam * (_pm_eps(prior, x_t, t, _targets("a red cube", "", seed=60)["a red cube"]) - eps)
    assert torch.allclose(rgb.grad, expected / 2, rtol=1e-6, atol=1e-9)
    assert out.info["reinject"] == pytest.approx(0.01)
    state = {k: v.clone() for k, v in cfd.state_dict().items()}
    nxt = cfd(rgb, batch, step=1).info
    again = CFDGuidance(prior, guidance_scale=1.0, subsamples=4, reinject=[0, 0.01, 0.0001, 10], seed=7)
    again.load_state_dict(state)
    assert again(rgb, batch, step=1).info == nxt


# --- tiny diffusers priors -----------------------------------------------------------------------------------------



def _render_batch(prompt="a red cube", b=2, size=12, **kw):
    cams = make_cameras([10.0, 40.0][:b], [0.0, 170.0][:b])
    depth, opacity = _sphere(cams, size)
    return GuidanceBatch(**{"prompt": prompt, "negative_prompt": "", "cameras": cams, "view_dependent": True,
                            "total_steps": 10, "depth": depth, "opacity": opacity, **kw})


@pytest.mark.parametrize("config", ["vsd", "nfsd", "ssd", "cfd", "dds-edit", "sdi", "ism", "csd", "asd", "perpneg",
                                    "esd"])
@pytest.mark.parametrize("name", ["sd", "if", "bundled"])
def test_each_method_runs_one_step_via_build_guidance(tiny_priors, name, config):
    prior = tiny_priors[name]
    cfg = load_config(CONFIGS / f"{config}.yaml", ["steps=10"])
    guidance = build_guidance(cfg, prior)
    assert type(guidance).__name__.lower().startswith(cfg.guidance.method)
    rgb = torch.rand(2, 3, 12, 12, requires_grad=True)
    batch = _render_batch(rgb_source=torch.rand(2, 3, 12, 12), source_prompt="a blue cube")
    out = guidance(rgb, batch, step=3)
    out.loss.backward()
    assert torch.isfinite(out.loss) and rgb.grad is not None and rgb.grad.abs().sum() > 0
    frozen = [prior.text_encoder] + ([prior.vae] if prior.vae is not None else [])
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert all(p.grad is None for n, p in prior.unet.named_parameters() if "lora" not in n)
    assert guidance.optimized_parameters() == []
    assert all(isinstance(v, float) for v in out.info.values())
    if hasattr(guidance, "close"):
        guidance.close()


def test_vsd_with_phi_predicting_the_noise_equals_sds(tiny_priors):
    prior = tiny_priors["bundled"]
    vsd, sds = VSDGuidance(prior, guidance_scale=3.0), SDSGuidance(prior, guidance_scale=3.0)
    x, noise, t = _randn(2, 3, 8, 8, seed=70).float(), _randn(2, 3, 8, 8, seed=71).float(), torch.tensor([100, 800])
    batch = _render_batch()
    vsd.phi_eps = lambda x_t, tt, bt: noise  # ε̂_φ := ε
    assert torch.allclose(vsd.grad(x, t, noise, batch), sds.grad(x, t, noise, batch), atol=1e-6)
    vsd.close()


@pytest.mark.parametrize("name", ["sd", "if", "bundled"])
def test_vsd_zero_initialized_phi_with_scale_one_gives_zero(tiny_priors, name):
    prior = tiny_priors[name]
    vsd = VSDGuidance(prior, guidance_scale=1.0)
    x = _randn(2, *prior.sample_shape(), seed=72).float()
    noise, t = _randn(2, *prior.sample_shape(), seed=73).float(), torch.tensor([50, 900])
    g = vsd.grad(x, t, noise, _render_batch(view_dependent=False))
    ref = vsd.grad(x, t, torch.zeros_like(noise), _render_batch(view_dependent=False))  # any ε
    assert g.abs().max() < 1e-5 and ref.abs().max() < 1e-5
    vsd.close()


def test_vsd_phi_loss_trains_phi_only_and_decreases(tiny_priors):
    prior = tiny_priors["sd"]
    before = prior.eps(_randn(2, 4, 8, 8, seed=74).float(), torch.tensor([300, 600]),
                       prior.encode_text(["a red cube"] * 2))
    vsd = VSDGuidance(prior, lora_lr=1e-3)
    cams = make_cameras([10.0, 40.0], [0.0, 170.0])
    x = _randn(2, 4, 8, 8, seed=75).float().requires_grad_()
    t, noise, keep = torch.tensor([100, 700]), _randn(2, 4, 8, 8, seed=76).float(), torch.tensor([True, False])
    emb = prior.encode_text(["a red cube"] * 2)
    loss0 = vsd.phi.loss(x, t, noise, emb, cams, keep)
    vsd.phi.step(loss0)
    assert x.grad is None  # the φ loss never reaches the render
    assert all(p.grad is not None for p in vsd.phi.params[-2:])  # camera MLP output layer
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vsd.phi.lora.values())
    assert all(p.grad is None for n, p in prior.unet.named_parameters() if "lora" not in n)
    loss1 = vsd.phi.loss(x, t, noise, emb, cams, keep)
    assert loss1.item() < loss0.item()
    after = prior.eps(_randn(2, 4, 8, 8, seed=74).float(), torch.tensor([300, 600]),
                      prior.encode_text(["a red cube"] * 2))
    assert torch.equal(before, after)  # outside φ the shared UNet is the original prior
    vsd.close()


def test_vsd_state_dict_round_trip_resumes_identically(tiny_priors, tmp_path):
    prior = tiny_priors["bundled"]
    a = VSDGuidance(prior, lora_lr=1e-3, lora_guidance_scale=2.0, seed=1)
    rgb, batch = torch.rand(2, 3, 8, 8), _render_batch()
    a(rgb, batch, step=0)
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(tmp_path / "vsd.safetensors"))
    state = load_file(str(tmp_path / "vsd.safetensors"))
    assert any(k.startswith("phi.opt.") for k in state) and any(k.startswith("phi.lora.") for k in state)
    out_a = a(rgb, batch, step=1)
    b = VSDGuidance(prior, lora_lr=1e-3, lora_guidance_scale=2.0, seed=99)
    b.load_state_dict(state)
    out_b = b(rgb, batch, step=1)
    assert out_a.info == out_b.info
    assert all(torch.equal(a.phi.lora[k], b.phi.lora[k]) for k in a.phi.lora)
    assert all(torch.equal(p, q) for p, q in zip(a.phi.camera.parameters(), b.phi.camera.parameters()))
    a.close(), b.close()
