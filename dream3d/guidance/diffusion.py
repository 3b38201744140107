"""The forward diffusion every method noises its x0 with: x_t = α_t x + σ_t ε, α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t)."""

from __future__ import annotations

import torch


def alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_t, σ_t), each (B,) in ᾱ's dtype, for integer timesteps t (B,); on `device` (default: ᾱ's)."""
    abar = alphas_cumprod[t.to(alphas_cumprod.device)].to(device or alphas_cumprod.device)
    return abar.sqrt(), (1.0 - abar).sqrt()


def forward_diffusion(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = α_t x + σ_t ε for x0 x (B,...), α_t and σ_t (B,), noise ε like x."""
    view = (-1,) + (1,) * (x.dim() - 1)
    return alpha.view(view) * x + sigma.view(view) * noise
