"""The interface every guidance method sees of a diffusion prior (`Prior` implements it; tests use analytic ones).

A prior is frozen: nothing here takes gradients except `encode_images`, whose result stays on the render's
autograd graph.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class DiffusionPrior(Protocol):
    """kind: "latent" (SD-style, with a VAE) | "pixel" (IF-style). resolution: the image side in pixels that
    `encode_images` resizes to. alphas_cumprod: (T,) fp32, ᾱ_t of the training schedule; num_train_timesteps: T.
    recommended_cfg: a guidance scale (diffusers form) the prior's metadata recommends, or None.
    strict_vocabulary: whether `check_prompt` can reject words (the bundled shapes prior)."""

    kind: str
    resolution: int
    alphas_cumprod: torch.Tensor
    num_train_timesteps: int
    recommended_cfg: float | None
    strict_vocabulary: bool

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B,L,D) text embeddings of B prompts, cached per prompt."""

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb (B,3,H,W) in [0,1] -> x0 (B,C,h,w): VAE latents (latent priors) or [-1,1] pixels (pixel priors)."""

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras: Any = None) -> torch.Tensor:
        """ε-prediction (B,C,h,w) fp32 for noisy x_t (B,C,h,w) at integer timesteps t (B,) and embeddings emb."""

    def check_prompt(self, prompt: str) -> None:
        """Raise PromptError when the prior cannot encode `prompt` (unknown word, too long)."""
