"""Turning a UNet's raw output into an ε-prediction, whatever the model was trained to predict."""

from __future__ import annotations

import torch


def drop_learned_variance(out: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the first `channels` channels of a UNet output (B,C',H,W).

    IF-style UNets with a learned variance output 2·C channels (ε, then the variance interpolation); only ε is used.
    """
    if out.shape[1] == channels:
        return out
    if out.shape[1] == 2 * channels:
        return out[:, :channels]
    raise ValueError(f"UNet output has {out.shape[1]} channels for a {channels}-channel input")


def to_eps(out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
           prediction_type: str) -> torch.Tensor:
    """ε from a model output, with x_t = α x0 + σ ε (α = √ᾱ_t, σ = √(1−ᾱ_t)).

    out, x_t: (B,C,H,W); alpha, sigma: (B,) or broadcastable to (B,1,1,1).
    - "epsilon": ε = out
    - "v_prediction": v = α ε − σ x0, hence ε = α v + σ x_t
    - "sample": x0 = out, hence ε = (x_t − α x0) / σ
    """
    alpha = alpha.reshape(-1, *([1] * (x_t.dim() - 1))) if alpha.dim() == 1 else alpha
    sigma = sigma.reshape(-1, *([1] * (x_t.dim() - 1))) if sigma.dim() == 1 else sigma
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        return alpha * out + sigma * x_t
    if prediction_type == "sample":
        return (x_t - alpha * out) / sigma
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")
