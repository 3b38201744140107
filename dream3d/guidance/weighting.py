"""Timestep weightings w(t) of the score-distillation gradient g = w(t)·(...).

With ᾱ = alphas_cumprod[t], α = √ᾱ, σ = √(1−ᾱ):
- "sds":        1 − ᾱ = σ²   (DreamFusion / threestudio)
- "uniform":    1
- "fantasia3d": α·σ²
- "lambda":     σ/α          (CFD, ISM)
"""

from __future__ import annotations

import difflib

import torch

from dream3d.errors import ConfigError

WEIGHTINGS = ("sds", "uniform", "fantasia3d", "lambda")


def check_weighting(name: str) -> str:
    """`name` if it is a known weighting, else ConfigError suggesting the closest one."""
    if name not in WEIGHTINGS:
        close = difflib.get_close_matches(str(name), WEIGHTINGS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (one of {', '.join(WEIGHTINGS)})"
        raise ConfigError(f"unknown weighting '{name}'{hint}")
    return name


def weight(name: str, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """w(t) (B,) fp32 for integer timesteps t (B,), on alphas_cumprod's device."""
    check_weighting(name)
    abar = alphas_cumprod[t.to(alphas_cumprod.device)].double()
    alpha, sigma2 = abar.sqrt(), 1.0 - abar
    if name == "sds":
        w = sigma2
    elif name == "uniform":
        w = torch.ones_like(abar)
    elif name == "fantasia3d":
        w = alpha * sigma2
    else:  # lambda
        w = sigma2.sqrt() / alpha
    return w.float()
