"""Deterministic DDIM steps between noise levels, in either direction: inversion (to more noise) and denoising.

With ᾱ_a, ᾱ_b the noise levels of the source and target timesteps and ε̂ the ε-prediction at the source x_a
(Song et al., DDIM, arXiv 2010.02502, η = 0):

    x̂0 = (x_a − √(1 − ᾱ_a)·ε̂)/√ᾱ_a,      x_b = √ᾱ_b·x̂0 + √(1 − ᾱ_b)·ε̂

In x̄ = x/√ᾱ, λ = √((1 − ᾱ)/ᾱ) coordinates this is the Euler step x̄_b = x̄_a + (λ_b − λ_a)·ε̂ of the probability
flow ODE dx̄/dλ = ε̂, so inversion followed by denoising over the same timesteps returns to the start up to the
discretization error of the two Euler walks. Timestep −1 stands for the clean image (ᾱ = 1); the model is asked
at timestep 0 there. Score distillation via inversion (SDI) and interval score matching (ISM) invert the
current render with these steps instead of noising it with random ε.
"""

from __future__ import annotations

from typing import Callable

import torch

CLEAN = -1  # the timestep index of the clean image, ᾱ = 1

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def abar_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ᾱ_t (B,) for integer timesteps t (B,), with ᾱ = 1 at t = CLEAN; on ᾱ's device and dtype."""
    t = t.to(alphas_cumprod.device)
    return torch.where(t < 0, torch.ones((), dtype=alphas_cumprod.dtype, device=alphas_cumprod.device),
                       alphas_cumprod[t.clamp(min=0)])


def ddim_step(x_a: torch.Tensor, eps: torch.Tensor, abar_a: torch.Tensor, abar_b: torch.Tensor) -> torch.Tensor:
    """x_b = √ᾱ_b·x̂0 + √(1 − ᾱ_b)·ε̂ with x̂0 = (x_a − √(1 − ᾱ_a)·ε̂)/√ᾱ_a. x_a, eps: (B,...); abar_a, abar_b: (B,)."""
    view = (-1,) + (1,) * (x_a.dim() - 1)
    abar_a, abar_b = abar_a.to(x_a).view(view), abar_b.to(x_a).view(view)
    x0 = (x_a - (1.0 - abar_a).sqrt() * eps) / abar_a.sqrt()
    return abar_b.sqrt() * x0 + (1.0 - abar_b).sqrt() * eps


def inversion_path(t: torch.Tensor, stride: int) -> torch.Tensor:
    """(K+1, B) int64 timesteps from the clean image to t (B,): CLEAN, stride, 2·stride, ... (those below t_b),
    then t_b; samples with fewer nodes repeat t_b at the end (a repeated node is no step)."""
    t = t.to("cpu", torch.long)
    stride = max(int(stride), 1)
    nodes = torch.arange(stride, int(t.max()) + stride, stride)
    rows = [torch.full_like(t, CLEAN)] + [torch.where(n < t, n, t) for n in nodes] + [t]
    path = torch.stack(rows)
    keep = torch.ones(path.shape[0], dtype=torch.bool)
    keep[1:] = (path[1:] != path[:-1]).any(dim=1)  # drop rows where no sample moves
    return path[keep]


@torch.no_grad()
def ddim_walk(eps_fn: EpsFn, x: torch.Tensor, path: torch.Tensor, alphas_cumprod: torch.Tensor,
              eta: float = 0.0, noise_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """x (B,...) moved along `path` (K+1, B) of timesteps (increasing: inversion; decreasing: denoising) by DDIM
    steps, the model asked once per step at the source: eps_fn(x_a (B,...), t_a (B,) with CLEAN read as 0).

    A sample whose node repeats does not move. eta > 0 adds eta·√v·ξ after each step (threestudio's SDI
    inversion), v = (1 − ᾱ_lo)/(1 − ᾱ_hi)·(1 − ᾱ_hi/ᾱ_lo) the DDPM posterior variance between the step's two
    levels (lo: less noise), ξ = noise_fn(x).
    """
    for a, b in zip(path[:-1], path[1:]):
        moving = a != b
        if not bool(moving.any()):
            continue
        abar_a, abar_b = abar_at(alphas_cumprod, a), abar_at(alphas_cumprod, b)
        eps = eps_fn(x, a.clamp(min=0).to(alphas_cumprod.device))
        nxt = ddim_step(x, eps, abar_a, abar_b)
        if eta > 0.0:
            lo, hi = torch.maximum(abar_a, abar_b), torch.minimum(abar_a, abar_b)
            var = (1.0 - lo) / (1.0 - hi).clamp_min(1e-12) * (1.0 - hi / lo)
            view = (-1,) + (1,) * (x.dim() - 1)
            nxt = nxt + eta * var.clamp_min(0.0).sqrt().to(x).view(view) * noise_fn(x)
        x = torch.where(moving.to(x.device).view((-1,) + (1,) * (x.dim() - 1)), nxt, x)
    return x


def noise_of(x_t: torch.Tensor, x0: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """The ε with x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε: (x_t − √ᾱ_t x0)/√(1 − ᾱ_t). x_t, x0: (B,...); abar_t: (B,)."""
    view = (-1,) + (1,) * (x_t.dim() - 1)
    abar_t = abar_t.to(x_t).view(view)
    return (x_t - abar_t.sqrt() * x0) / (1.0 - abar_t).sqrt()
