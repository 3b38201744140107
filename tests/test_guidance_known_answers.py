"""Known answers for SDS, VSD, NFSD, SSD, CFD and DDS on analytic priors whose ε-prediction is exact.

The prior: given prompt y the data are x0 ~ N(μ_y, std²·I) (`tiny_models.GaussianPrior`). With ᾱ = ᾱ_t,
α = √ᾱ, σ = √(1−ᾱ) and x_t = α x + σ ε, its exact ε-prediction E[ε | x_t] is

    ε*(x_t) = σ (x_t − α μ) / (ᾱ std² + σ²) = c·(x − μ) + k·ε,     c = σα/(ᾱ std² + σ²),  k = σ²/(ᾱ std² + σ²)

(the second form on the noised x), and classifier-free guidance of two such priors with one std is again one:
ε*_u + s(ε*_c − ε*_u) has mean μ_s = μ_u + s(μ_c − μ_u). Each test below derives its expectation from these
formulas, never from the prior's code, and asserts the fixed point of the update (where the method drives the
render) or its gradient for every ε (hence its expectation) against the closed form. float64 throughout; w(t) is
float32 in dream3d, hence rtol 1e-6 where a closed form is compared directly.

What is already covered elsewhere and not repeated: point-mass gradients of SDS for every weighting and CFG
(tests/test_sds.py), NFSD = SDS − w·ε below t_D, the SSD decomposition and rescaling, DDS = SDS(target) −
SDS(source) and zero for an identical source, CFD = DDIM in x̄ coordinates (tests/test_guidance_methods.py).
"""

from __future__ import annotations

import pytest
import torch

from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfd import CFDGuidance
from dream3d.guidance.dds import DDSGuidance
from dream3d.guidance.nfsd import NFSDGuidance
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.ssd import SSDGuidance
from dream3d.guidance.vsd import VSDGuidance
from tiny_models import GaussianPrior

STD = 0.5
SHAPE = (1, 4, 4)


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _prior(shape=SHAPE, seed: int = 0, std: float = STD, prompts=("a red cube", "a blue cube", "", "ugly")):
    """A Gaussian prior with one random mean per prompt (the empty prompt's included)."""
    means = {p: _randn(*shape, seed=seed + i) for i, p in enumerate(prompts)}
    return GaussianPrior(means, std=std), means


def _coefs(prior: GaussianPrior, t: torch.Tensor, std: float = STD) -> tuple[torch.Tensor, ...]:
    """(α, σ, c, k) of the module doc, (B,1,1,1) float64, for timesteps t (B,)."""
    abar = prior.alphas_cumprod[t].double().reshape(-1, 1, 1, 1)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    den = abar * std ** 2 + sigma ** 2
    return alpha, sigma, sigma * alpha / den, sigma ** 2 / den


def _batch(prompt: str = "a red cube", **kw) -> GuidanceBatch:
    return GuidanceBatch(**{"prompt": prompt, "negative_prompt": "", "total_steps": 10, **kw})


def _sgd(guidance, x: torch.Tensor, steps: int, lr: float, batch_of=None) -> torch.Tensor:
    """`steps` calls of guidance(x, batch, k), each followed by x ← x − lr·B·∂loss/∂x = x − lr·g (the loss trick
    gives ∂loss/∂x = g/B). batch_of(k, x) -> GuidanceBatch (default `_batch(total_steps=steps)`)."""
    x = x.clone().requires_grad_()
    for k in range(steps):
        batch = batch_of(k, x.detach()) if batch_of else _batch(total_steps=steps)
        x.grad = None
        guidance(x, batch, k).loss.backward()
        with torch.no_grad():
            x -= lr * x.shape[0] * x.grad
    return x.detach()


def _spread(x: torch.Tensor) -> float:
    """Pooled standard deviation of B particles (B,...) about their mean (unbiased over particles)."""
    dev = x - x.mean(0)
    return float(dev.square().sum().div((x.shape[0] - 1) * x[0].numel()).sqrt())


# --- SDS -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_sds_gradient_on_a_gaussian_for_every_noise(scale):
    """g = w(t)(ε̂_s − ε) = w(t)[c(x − μ_s) − (1 − k)ε] for every ε: its expectation w·c(x − μ_s) vanishes only
    at the mode μ_s, and its noise part −w(1−k)ε = −w·ᾱstd²/(ᾱstd² + σ²)·ε is SDS's variance."""
    prior, mu = _prior()
    sds = SDSGuidance(prior, guidance_scale=scale)
    x, t = _randn(3, *SHAPE, seed=10), torch.tensor([30, 500, 970])
    _, sigma, c, k = _coefs(prior, t)
    mu_s = mu[""] + scale * (mu["a red cube"] - mu[""])
    for seed in (11, 12):
        noise = _randn(3, *SHAPE, seed=seed)
        expected = sigma ** 2 * (c * (x - mu_s) - (1 - k) * noise)  # w = σ² ("sds" weighting)
        assert torch.allclose(sds.grad(x, t, noise, _batch()), expected, rtol=1e-6, atol=1e-12)


def test_sds_mean_gradient_over_its_own_noise_draws():
    """The call's own draws: with t fixed (t_min = t_max) the mean of ∂loss/∂x over 4000 copies of one render is
    w·c(x − μ)/B per copy, the closed-form expectation; the noise part averages away as 1/√4000."""
    prior, mu = _prior()
    n, t = 4000, 200
    sds = SDSGuidance(prior, guidance_scale=1.0, t_min=t / 1000, t_max=t / 1000)
    x0 = _randn(*SHAPE, seed=20)
    x = x0.expand(n, *SHAPE).clone().requires_grad_()
    out = sds(x, _batch(), step=0)
    out.loss.backward()
    assert out.info["t"] == t
    _, sigma, c, k = _coefs(prior, torch.tensor([t]))
    mean_g = x.grad.mean(0) * n  # ∂loss/∂x = g/B
    expected = (sigma ** 2 * c * (x0 - mu["a red cube"]))[0]
    noise_sd = float((sigma ** 2 * (1 - k)).squeeze()) / n ** 0.5  # the standard error of the noise part
    assert (mean_g - expected).abs().max() < 5 * noise_sd
    assert (expected.abs() > 20 * noise_sd).sum() >= 8  # the expectation is resolved, not lost in the noise


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_sds_descent_collapses_to_the_mode_vsd_with_an_exact_phi_samples(scale):
    """Mode seeking against sampling. 32 particles from N(0, 1.5²) descend on random t and ε.
    SDS: every particle's expected gradient w·c(x − μ_s) vanishes only at μ_s, so all collapse there (their spread
    falls from 1.5 to the SGD noise floor, < 0.15 of the prior's std). VSD with φ exact for the particles' own
    Gaussian fit q = N(m, v·I), i.e. the minimiser of φ's diffusion loss: g = w(ε*_p − ε*_q)
    = w[c_p(x − μ_s) − c_q(x − m) + (k_p − k_q)ε], zero for every x and ε exactly when q = p, and contracting
    (v > std²) or expanding (v < std²) the spread otherwise: the particles become samples of N(μ_s, std²)."""
    prior, mu = _prior()
    mu_s = mu[""] + scale * (mu["a red cube"] - mu[""])
    start = 1.5 * _randn(32, *SHAPE, seed=30)
    sds = _sgd(SDSGuidance(prior, guidance_scale=scale, seed=1), start, 600, 0.5)
    assert (sds.mean(0) - mu_s).abs().max() < 0.05 and _spread(sds) < 0.15 * STD
    vsd = ExactPhiVSD(prior, guidance_scale=scale, seed=1)
    for init in (start, 0.05 * start):  # from wider and from narrower than the prior
        x = _sgd(vsd, init, 600, 0.5, batch_of=vsd.fit_batch)
        assert (x.mean(0) - mu_s).abs().max() < 1e-3 and _spread(x) == pytest.approx(STD, rel=1e-3)
    # at q = p the VSD gradient vanishes for every particle and every ε
    vsd.fit = (mu_s, STD ** 2)
    x, t = _randn(4, *SHAPE, seed=31), torch.tensor([20, 300, 700, 980])
    g = vsd.grad(x, t, _randn(4, *SHAPE, seed=32), _batch())
    assert g.abs().max() < 1e-6 * (x - mu_s).abs().max()


class ExactPhiVSD(VSDGuidance):
    """VSDGuidance whose φ is the exact ε-prediction of a Gaussian N(m, v·I) fitted to the current particles
    (`fit_batch` refits it before each call), the optimum φ's diffusion loss trains towards; no LoRA is built and
    φ is never trained. Everything else is VSDGuidance's own code."""

    def __init__(self, prior, guidance_scale: float, seed: int = 0):
        SDSGuidance.__init__(self, prior, guidance_scale=guidance_scale, seed=seed)
        self.train_phi, self.lora_guidance_scale, self.fit = False, 1.0, None

    def fit_batch(self, step: int, x: torch.Tensor) -> GuidanceBatch:
        self.fit = (x.mean(0), _spread(x) ** 2)
        return _batch(total_steps=600)

    def phi_eps(self, x_t, t, batch):
        m, v = self.fit
        abar = self.prior.alphas_cumprod[t].double().reshape(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * m) / (abar * v + 1 - abar)

    def close(self) -> None:
        pass


# --- NFSD ----------------------------------------------------------------------------------------------------------

def test_nfsd_directions_are_noise_free_above_t_d():
    """t ≥ t_D: g = w(δ_D + s·δ_C) with δ_C = ε_c − ε_∅ = c(μ_∅ − μ_c) and δ_D = ε_∅ − ε_neg = c(μ_neg − μ_∅):
    the same for every ε and every render x (NFSD's point: no noise term), a closed-form constant."""
    prior, mu = _prior()
    s = 7.5
    nfsd = NFSDGuidance(prior, guidance_scale=s)
    t = torch.tensor([200, 600, 950])
    _, sigma, c, _ = _coefs(prior, t)
    expected = sigma ** 2 * c * ((mu["ugly"] - mu[""]) + s * (mu[""] - mu["a red cube"]))
    for seed in (40, 41, 42):
        x, noise = 3 * _randn(3, *SHAPE, seed=seed), _randn(3, *SHAPE, seed=seed + 10)
        g = nfsd.grad(x, t, noise, _batch(negative_prompt="ugly"))
        assert torch.allclose(g, expected.expand_as(g), rtol=1e-6, atol=1e-12)


def test_nfsd_below_t_d_has_the_sds_mode_as_its_fixed_point():
    """t < t_D (threshold 1: every t): g = w(ε_∅ + s·δ_C) = w[c(x − μ_s) + k·ε], whose expectation is SDS's, so
    descent drives the particles' mean to the mode μ_s. Checked per ε, and by descent of 256 particles (t ≤ 500,
    where c is not small): the k·ε part keeps them spread, so the mean is compared within 4 standard errors."""
    prior, mu = _prior()
    s = 3.0
    nfsd = NFSDGuidance(prior, guidance_scale=s, threshold=1.0, negative_prompt="ugly", t_max=0.5, seed=2)
    mu_s = mu[""] + s * (mu["a red cube"] - mu[""])
    x, t, noise = _randn(3, *SHAPE, seed=43), torch.tensor([10, 199, 999]), _randn(3, *SHAPE, seed=44)
    _, sigma, c, k = _coefs(prior, t)
    expected = sigma ** 2 * (c * (x - mu_s) + k * noise)
    assert torch.allclose(nfsd.grad(x, t, noise, _batch()), expected, rtol=1e-6, atol=1e-12)
    end = _sgd(nfsd, _randn(256, *SHAPE, seed=45), 600, 0.2)
    standard_error = _spread(end) / 256 ** 0.5
    assert (end.mean(0) - mu_s).abs().max() < 4 * standard_error and standard_error < 0.05


# --- SSD -----------------------------------------------------------------------------------------------------------

def test_ssd_mode_seeking_term_expectation_is_the_conditional_mode():
    """t ≤ M, no rescaling: ε_c = d + kε with d = c(x − μ_c), r = ⟨ε_c, ε⟩/‖ε‖² = k + ⟨d, ε⟩/‖ε‖², so
    ε̃ = d − (⟨d, ε⟩/‖ε‖²)ε and, as E[εεᵀ/‖ε‖²] = I/n (n = C·h·w, rotational symmetry), E[g] = w(1 − 1/n)·d:
    a pull to the conditional mode μ_c (no guidance term), shrunk by 1 − 1/n = 3/4 at n = 4. Monte Carlo over
    20000 ε (standard error about 0.004·|d|; dividing by ‖ε‖ instead of ‖ε‖² would give 1 − E‖ε‖/n ≈ 0.53)."""
    shape, n = (1, 2, 2), 20000
    prior, mu = _prior(shape)
    ssd = SSDGuidance(prior, guidance_scale=7.5, threshold=0.8, rescale=False)
    x0 = _randn(*shape, seed=50)
    t = torch.full((n,), 400)
    g = ssd.grad(x0.expand(n, *shape), t, _randn(n, *shape, seed=51), _batch())
    _, sigma, c, _ = _coefs(prior, t[:1])
    d = (c * (x0 - mu["a red cube"]))[0]
    assert torch.allclose(g.mean(0), sigma[0] ** 2 * 0.75 * d, atol=0.02 * float(sigma[0] ** 2 * d.norm()))


def test_ssd_above_m_is_a_noise_free_constant():
    """t > M: g = w(s − 1)(ε_c − ε_u) = w(s − 1)c(μ_u − μ_c), the same for every ε and x."""
    prior, mu = _prior()
    s = 7.5
    ssd = SSDGuidance(prior, guidance_scale=s, threshold=0.8)
    t = torch.tensor([801, 900, 980])
    _, sigma, c, _ = _coefs(prior, t)
    expected = sigma ** 2 * (s - 1) * c * (mu[""] - mu["a red cube"])
    for seed in (52, 53):
        g = ssd.grad(3 * _randn(3, *SHAPE, seed=seed), t, _randn(3, *SHAPE, seed=seed + 5), _batch())
        assert torch.allclose(g, expected.expand_as(g), rtol=1e-6, atol=1e-12)


# --- CFD -----------------------------------------------------------------------------------------------------------

def test_cfd_flow_turns_its_noise_into_a_sample_of_the_prior():
    """CFD's matched step size (lr_k = 1 − λ_{k+1}/λ_k, see dream3d/guidance/cfd.py) makes x̄ = x + λ_t ε̃ follow
    DDIM, here in closed form: ε* = λ(x̄ − μ)/(std² + λ²) in x̄ = x_t/α, so each step multiplies x̄ − μ by
    1 − (λ_k − λ_{k+1})λ_k/(std² + λ_k²). That is the Euler scheme of the probability-flow ODE, which for N(μ, std²)
    data is linear: x̄(λ) − μ = √((std² + λ²)/(std² + λ₀²))·(x̄(λ₀) − μ). From x = 0 at λ₀ = λ(980) ≫ std the
    render ends near x = x̄ − λ_end ε̃ ≈ μ + (√(std² + λ_end²) − λ_end)·ε̃: a sample of the prior (its noise ε̃
    scaled to the prior's std, less the noise λ_end still left at t_min), not its mode μ. 400 steps; 768 pixels:
    the discrete product exactly, the ODE's answer within the Euler error (< 0.03 std)."""
    shape = (3, 16, 16)
    prior, mu = _prior(shape)
    mu = mu["a red cube"]
    n_steps = 400
    cfd = CFDGuidance(prior, guidance_scale=1.0, t_min=0.002, t_max=0.98)
    acp = prior.alphas_cumprod.double()
    ts = [int(cfd.schedule(k, n_steps, 1)) for k in range(n_steps + 1)]
    lam = [float(((1 - acp[t]) / acp[t]).sqrt()) for t in ts]
    x = torch.zeros(1, *shape, dtype=torch.float64, requires_grad=True)
    for k in range(n_steps):
        x.grad = None
        cfd(x, _batch(total_steps=n_steps), k).loss.backward()
        with torch.no_grad():
            x -= (1 - lam[k + 1] / lam[k]) * x.grad
    eps_tilde = cfd.noise((1, *shape)).double()
    product = torch.tensor([1 - (a - b) * a / (STD ** 2 + a ** 2) for a, b in zip(lam[:-1], lam[1:])]).prod()
    discrete = mu + product * (lam[0] * eps_tilde - mu) - lam[-1] * eps_tilde
    assert torch.allclose(x.detach(), discrete, rtol=1e-5, atol=1e-6)  # w(t) is float32: 400 roundings
    flow = ((STD ** 2 + lam[-1] ** 2) / (STD ** 2 + lam[0] ** 2)) ** 0.5
    ode = mu + flow * (lam[0] * eps_tilde - mu) - lam[-1] * eps_tilde
    assert (x.detach() - ode).abs().max() < 0.03 * STD
    scale = float(((x.detach() - mu) * eps_tilde).sum() / eps_tilde.square().sum())
    assert scale == pytest.approx((STD ** 2 + lam[-1] ** 2) ** 0.5 - lam[-1], rel=0.02) and scale > 0.9 * STD


# --- DDS -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["a blue cube", "a red cube"])
def test_dds_gradient_is_noise_free_and_its_fixed_point_is_the_prompt_delta(target):
    """Same t and ε on both images, one negative prompt: g = w(ε̂_s(x_t; y_tgt) − ε̂_s(x̃_t; y_src))
    = w·c[(x − x̃) − s(μ_tgt − μ_src)] for every ε (the noise and the unconditional terms cancel exactly), so
    descent from the source converges to x̃ + s(μ_tgt − μ_src): the edit moves the image by the prompts' delta,
    not to the target's mode; with identical prompts it stays at the source."""
    prior, mu = _prior()
    s = 7.5
    dds = DDSGuidance(prior, guidance_scale=s, seed=3)
    src = _randn(2, *SHAPE, seed=60)
    batch = _batch(target, rgb_source=src, source_prompt="a red cube")
    x, t = _randn(2, *SHAPE, seed=61), torch.tensor([60, 800])
    _, _, c, _ = _coefs(prior, t)
    expected = c * ((x - src) - s * (mu[target] - mu["a red cube"]))  # w = 1 ("uniform")
    for seed in (62, 63):
        assert torch.allclose(dds.grad(x, t, _randn(2, *SHAPE, seed=seed), batch), expected, rtol=1e-6,
                              atol=1e-12)
    end = _sgd(dds, src, 400, 0.5, batch_of=lambda k, x: batch)
    assert torch.allclose(end, src + s * (mu[target] - mu["a red cube"]), atol=1e-6)
