"""Variational Score Distillation (ProlificDreamer, Wang et al., NeurIPS 2023, arXiv 2305.16213).

    x = prior.encode_images(rgb),  t ~ schedule,  ε ~ N(0,I),  x_t = α_t x + σ_t ε
    g = w(t)·(ε̂_pre,s(x_t; y, t) − ε̂_φ(x_t; y, t, c))          (VSD gradient: the −ε of SDS becomes φ's score)
    loss = 0.5·Σ(x − sg(x − g))²/B

ε̂_pre,s is the frozen prior with CFG (diffusers form, s = 7.5 by default, view-dependent prompt if asked) with
every adapter disabled; ε̂_φ is the prior's UNet with this method's LoRA and camera embedding
(`dream3d.guidance.lora_phi`), fed the view-independent prompt and the camera c; with `lora_guidance_scale` ≠ 1 it is
itself a CFG over the camera: ε̂_φ = ε_φ(c=∅) + s_φ(ε_φ(c) − ε_φ(c=∅)).

After computing g (with the current φ) the same call trains φ one AdamW step on the detached x (VSD's φ update):
t' ~ U{0..T−1}, ε' ~ N(0,I), camera zeroed with probability `camera_dropout`, ordinary diffusion loss. So
`optimized_parameters()` is [] (the trainer's optimizer never sees φ) and the module's state_dict holds φ's LoRA,
camera MLP and AdamW state (tensors only: "phi.lora.*", "phi.camera.*", "phi.opt.*"), restored exactly by
`load_state_dict`. Per step the generator draws t, ε, then t', ε' and the camera-dropout mask. So a resumed run is
bitwise identical to an uninterrupted one where the run itself is reproducible: on the CPU with the same number of
threads (README, "Reproducibility"); on a GPU it is close, not bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.cameras import camera_features
from dream3d.errors import ConfigError
from dream3d.guidance.base import GuidanceOut
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine
from dream3d.guidance.lora_phi import PhiModel, camera_input
from dream3d.guidance.output import distillation_output
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class VSDSettings:
    """guidance.vsd: φ, a LoRA + camera-embedding copy of the prior trained online with its own AdamW."""

    lora_rank: int = 4
    lora_lr: float = 0.0001  # φ's AdamW learning rate
    camera_dropout: float = 0.1  # probability of training φ without its camera
    lora_guidance_scale: float = 1.0  # CFG over φ's camera; 1 = camera-conditional only


@register("vsd", VSDSettings, "variational score distillation: a LoRA + camera-embedding copy of the prior "
          "trained online (ProlificDreamer, arXiv 2305.16213)")
class VSDGuidance(SDSGuidance):
    """VSD. Arguments as `SDSGuidance` (guidance_scale defaults to 7.5) plus:

    lora_rank: LoRA rank (4); lora_lr: φ's AdamW learning rate (1e-4); camera_dropout: probability of training φ
    without its camera (0.1); lora_guidance_scale: CFG scale over φ's camera (1.0 = camera-conditional only);
    train_phi: whether a call trains φ (True; False freezes φ, e.g. for evaluation).
    """

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = 7.5, lora_rank: int = VSDSettings.lora_rank,
                 lora_lr: float = VSDSettings.lora_lr, camera_dropout: float = VSDSettings.camera_dropout,
                 lora_guidance_scale: float = VSDSettings.lora_guidance_scale, train_phi: bool = True, **kwargs):
        super().__init__(prior, guidance_scale=guidance_scale, **kwargs)
        if not 0.0 <= camera_dropout <= 1.0:
            raise ConfigError(f"guidance.vsd.camera_dropout must lie in [0, 1]; got {camera_dropout}")
        self.phi = PhiModel(prior, rank=lora_rank, lr=lora_lr)
        self.camera_dropout = float(camera_dropout)
        self.lora_guidance_scale = float(lora_guidance_scale)
        self.train_phi = bool(train_phi)

    # --- φ's prediction -----------------------------------------------------------------------------------------
    def phi_embeddings(self, batch: GuidanceBatch, n: int) -> torch.Tensor:
        """φ's text embeddings (n,L,D): the view-independent prompt."""
        self.prompts(batch, n)  # validates the prompt
        return self.prior.encode_text([batch.prompt] * n)

    @torch.no_grad()
    def phi_eps(self, x_t: torch.Tensor, t: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """ε̂_φ(x_t; y, t, c) (B,C,h,w), with CFG over the camera when lora_guidance_scale ≠ 1."""
        b = x_t.shape[0]
        emb = self.phi_embeddings(batch, b)
        cams = batch.cameras
        c2w = camera_input(cams, b, x_t.device)
        feats = None if cams is None else camera_features(cams).to(x_t.device)
        if self.lora_guidance_scale == 1.0:
            return self.phi.eps(x_t, t, emb, c2w, feats)
        zero = None if feats is None else torch.zeros_like(feats)
        both = self.phi.eps(torch.cat([x_t, x_t]), t.repeat(2), torch.cat([emb, emb]),
                            torch.cat([c2w, torch.zeros_like(c2w)]),
                            None if feats is None else torch.cat([feats, zero]))
        eps_cam, eps_nocam = both.split(b)
        return cfg_combine(eps_nocam, eps_cam, self.lora_guidance_scale)  # CFG over the camera (ProlificDreamer)

    # --- the VSD gradient -------------------------------------------------------------------------------------
    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = w(t)·(ε̂_pre,s(x_t) − ε̂_φ(x_t)) (B,C,h,w) for x0 x (B,C,h,w), timesteps t (B,), noise ε like x."""
        x_t, eps_c, eps_u = self.noisy_branches(x, t, noise, batch)  # x_t = α x + σ ε; adapters off
        eps_pre = cfg_combine(eps_u, eps_c, self.guidance_scale)  # ε̂_pre,s
        w = self.weight_like(t, x)
        return w * (eps_pre - self.phi_eps(x_t, t, batch))  # VSD gradient

    # --- φ's update ---------------------------------------------------------------------------------------------
    def phi_batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(t' (b,) ~ U{0..T−1}, keep (b,) bool camera mask), drawn on the generator."""
        t = torch.randint(0, int(self.prior.num_train_timesteps), (b,), generator=self.generator)
        keep = torch.rand(b, generator=self.generator) >= self.camera_dropout
        return t, keep

    def phi_update(self, x: torch.Tensor, batch: GuidanceBatch) -> float:
        """One φ step on the detached x0 (B,C,h,w); returns L_φ before the step."""
        b = x.shape[0]
        t, keep = self.phi_batch(b)
        t = t.to(self.prior.alphas_cumprod.device)
        noise = self.randn_like(x)
        with torch.enable_grad():
            loss = self.phi.loss(x.detach(), t, noise, self.phi_embeddings(batch, b), batch.cameras, keep)
            self.phi.step(loss)
        return float(loss.detach())

    def forward(self, rgb: torch.Tensor, batch: GuidanceBatch, step: int) -> GuidanceOut:
        x = self.prior.encode_images(rgb)
        t = self.schedule(step, batch.total_steps, x.shape[0], self.generator)
        t = t.to(self.prior.alphas_cumprod.device)
        noise = self.randn_like(x)
        g = self.grad(x, t, noise, batch)
        extra = {"lora_loss": self.phi_update(x, batch)} if self.train_phi else {}
        return distillation_output(self, x, g, t, step, extra)

    def close(self) -> None:
        """Detach φ from the prior's UNet (removes the LoRA adapter and the time-embedding hook)."""
        self.phi.close()
