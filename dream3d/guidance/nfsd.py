"""Noise-Free Score Distillation (Katzir et al., ICLR 2024, arXiv 2310.17590).

NFSD splits the CFG prediction into a condition direction and a domain term and drops SDS's −ε:

    δ_C = ε_c − ε_∅                          (NFSD "condition direction")
    δ_D = ε_∅            if t < t_D          (NFSD "in-domain direction": for small t, ε_∅ = δ_D + δ_N with δ_N ≈ 0)
        = ε_∅ − ε_neg    otherwise           (NFSD: δ_N is removed by subtracting the negative-prompt prediction)
    g   = w(t)·(δ_D + s·δ_C)                  (the NFSD gradient: SDS's ε̂_s − ε with the noise terms dropped)

(The terms carry the paper's names, arXiv 2310.17590; its equation numbers are not cited.)

t_D = 200 for the paper's 1000-step models; here t_D = round(threshold·T) with threshold = 0.2 by default, so a
prior with T ≠ 1000 switches at the same noise-level fraction. ε_c, ε_∅ (empty prompt) and ε_neg (negative
prompt) come from one batched UNet call with 3B samples. Note δ_D + s·δ_C = cfg_combine(ε_∅, ε_c, s) − [t ≥ t_D]·ε_neg,
which is how it is evaluated (so NFSD and SDS share the CFG arithmetic bit for bit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dream3d.errors import ConfigError, PromptError
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine, predict_branches
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.timesteps import to_index
from dream3d.priors.protocol import DiffusionPrior

log = logging.getLogger("dream3d")

# the negative prompt used by the NFSD paper (arXiv 2310.17590) for ε_neg
NFSD_NEGATIVE_PROMPT = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                        "low-resolution, gloomy")


@dataclass
class NFSDSettings:
    """guidance.nfsd: δ_D = ε_∅ below threshold·T (the paper's 200 of 1000), ε_∅ − ε_neg above."""

    threshold: float = 0.2


@register("nfsd", NFSDSettings, "noise-free score distillation: prompt, empty and negative branches "
          "(Katzir et al., arXiv 2310.17590)")
class NFSDGuidance(SDSGuidance):
    """NFSD. Arguments as `SDSGuidance` (guidance_scale defaults to 7.5) plus:

    threshold: t_D as a fraction of T (0.2 = the paper's 200 of 1000).
    negative_prompt: the ε_neg prompt. None: the batch's "negative_prompt" when non-empty, else the paper's
        `NFSD_NEGATIVE_PROMPT` when the prior can encode it (a strict-vocabulary prior such as the bundled one
        cannot: then the empty prompt, i.e. δ_D = 0 for t ≥ t_D, with a warning).
    """

    def __init__(self, prior: DiffusionPrior, guidance_scale: float | None = 7.5, threshold: float = NFSDSettings.threshold,
                 negative_prompt: str | None = None, **kwargs):
        super().__init__(prior, guidance_scale=guidance_scale, **kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"guidance.nfsd.threshold must lie in [0, 1]; got {threshold}")
        self.threshold_t = to_index(threshold, int(prior.num_train_timesteps)) if threshold < 1.0 \
            else int(prior.num_train_timesteps)
        self.negative_prompt = negative_prompt
        self._warned = False

    def negative(self, batch: GuidanceBatch) -> str:
        """The prompt of the ε_neg branch (see class doc)."""
        if self.negative_prompt is not None:
            return self.negative_prompt
        if batch.negative_prompt:
            return batch.negative_prompt
        if getattr(self.prior, "strict_vocabulary", False) and hasattr(self.prior, "check_prompt"):
            try:
                self.prior.check_prompt(NFSD_NEGATIVE_PROMPT)
            except PromptError:
                if not self._warned:
                    log.warning("nfsd: the prior cannot encode the NFSD negative prompt; using the empty prompt")
                    self._warned = True
                return ""
        return NFSD_NEGATIVE_PROMPT

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = w(t)·(δ_D + s·δ_C) (B,C,h,w) for x0 x (B,C,h,w), timesteps t (B,), noise ε like x."""
        x = x.detach()
        b = x.shape[0]
        view = (-1,) + (1,) * (x.dim() - 1)
        x_t = self.diffuse(x, t, noise)  # forward diffusion x_t = α x + σ ε
        cond, _ = self.prompts(batch, b)
        embs = [self.prior.encode_text(cond), self.prior.encode_text([""] * b),
                self.prior.encode_text([self.negative(batch)] * b)]
        eps_c, eps_null, eps_neg = predict_branches(self.prior, x_t, t, embs, batch.cameras)
        domain = (t.to(x.device) >= self.threshold_t).to(x.dtype).view(view)  # δ_D switch: 0 if t < t_D
        w = self.weight_like(t, x)
        # NFSD gradient: δ_D + s·δ_C = ε_∅ + s(ε_c − ε_∅) − [t ≥ t_D]·ε_neg
        return w * (cfg_combine(eps_null, eps_c, self.guidance_scale) - domain * eps_neg)
