"""What every guidance method shares: the output type, the call contract, prompts, noise and RNG state.

A guidance method is an `nn.Module` called as `guidance(rgb, batch, step) -> GuidanceOut`:
- rgb: (B,3,H,W) renders in [0,1] (differentiable);
- batch: a `GuidanceBatch` (prompt, negative prompt, cameras, view dependence, total steps, and the render
  extras some methods read: opacity and depth for CFD, the source render and prompt for DDS);
- step: the optimization step (0-based).
`loss.backward()` delivers ∂/∂rgb; the prior never receives gradients.

The prior is a `dream3d.priors.protocol.DiffusionPrior`: anything with `encode_text`, `encode_images`, `eps`,
`alphas_cumprod`, `num_train_timesteps` (and optionally `kind`, `recommended_cfg`) works, e.g. analytic denoisers
in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dream3d.cameras import view_suffixes
from dream3d.errors import PromptError
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.diffusion import alpha_sigma, forward_diffusion
from dream3d.guidance.state import TensorState, attach_shared
from dream3d.priors.protocol import DiffusionPrior


@dataclass
class GuidanceOut:
    """loss: scalar to back-propagate; info: plain floats for logs/metrics (t, w, grad_norm, ...)."""

    loss: torch.Tensor
    info: dict[str, float] = field(default_factory=dict)


class Guidance(TensorState):
    """Base class: an `nn.Module` whose `forward(rgb, batch, step)` is the method's step. Uses the prior (a plain
    attribute, never a submodule: its weights are not the method's state) and owns a CPU `torch.Generator` for
    timesteps and noise, seeded here; its state is the state_dict entry "rng_state", so a resumed run draws the
    same t and ε. Subclasses add their own state as submodules (VSD's "phi.*", CFD's "noise.*")."""

    def __init__(self, prior: DiffusionPrior, seed: int | None = 0):
        super().__init__()
        attach_shared(self, "prior", prior)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    def optimized_parameters(self) -> list[torch.nn.Parameter]:
        """Tensors the trainer's optimizer should train alongside the renderer: none for every current method
        (VSD's φ has its own AdamW, stepped inside the call)."""
        return []

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The generator's state as "rng_state" (uint8)."""
        return {"rng_state": self.generator.get_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        rest = dict(tensors)
        self.generator.set_state(rest.pop("rng_state").detach().to("cpu", torch.uint8))
        super().load_state_tensors(rest)

    # --- shared helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def prompts(batch: GuidanceBatch, n: int) -> tuple[list[str], list[str]]:
        """(conditional prompts, negative prompts), n each; view suffixes appended to the former if asked."""
        prompt = batch.prompt
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError("the prompt is empty")
        cond = [prompt] * n
        if batch.view_dependent:
            cams = batch.cameras
            if cams is None:
                raise ValueError("view_dependent prompts need batch.cameras")
            if len(cams) != n:
                raise ValueError(f"{len(cams)} cameras for {n} images")
            cond = [prompt + s for s in view_suffixes(cams)]
        return cond, [batch.negative_prompt or ""] * n

    def text_embeddings(self, batch: GuidanceBatch, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond) embeddings, each (n, L, D), from the prior's per-prompt cache."""
        cond, neg = self.prompts(batch, n)
        return self.prior.encode_text(cond), self.prior.encode_text(neg)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like x, drawn on the CPU generator (device-independent), on x's device."""
        return torch.randn(x.shape, generator=self.generator, dtype=torch.float32).to(x.device, x.dtype)

    def diffuse(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = α_t x + σ_t ε (`forward_diffusion` with the prior's ᾱ) for x0 x (B,...), timesteps t (B,),
        noise ε like x."""
        return forward_diffusion(x, *alpha_sigma(self.prior.alphas_cumprod, t, x.device), noise)
