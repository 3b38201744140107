"""`Prior`: a frozen text-to-image diffusion model seen through the one interface every guidance method uses.

Kinds:
- "latent" (SD-style, has a VAE): images are resized to `resolution` (bilinear, antialiased), mapped to [-1,1],
  VAE-encoded, and the **posterior mean** (not a sample: deterministic, and the SD VAE's posterior std is tiny)
  is multiplied by the VAE's `scaling_factor` (after subtracting `shift_factor` when the VAE has one).
- "pixel" (DeepFloyd IF stage I, the bundled shapes prior): images are resized to the UNet's native size
  (bilinear, antialiased) and mapped to [-1,1].

Precision: `dtype=None` means fp16 for the text encoder and UNet on CUDA and fp32 on CPU. The VAE always runs in
fp32 (fp16 SD VAEs can overflow; the encoder is also on the gradient path). `eps` returns fp32.

Everything runs without autograd except `encode_images` (gradients reach the render through the resize and the
VAE encoder) and `eps_grad` (for methods that train an adapter on the UNet). The model's own parameters are frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dream3d.cameras import Cameras, camera_features
from dream3d.errors import PromptError, safe_text
from dream3d.priors.memory import MemoryOptions, apply_memory_options
from dream3d.priors.loading import NEEDED, OPTIONAL, _spec, fail, load_component, read_index
from dream3d.priors.prediction import drop_learned_variance, to_eps

CAMERA_FEATURES = 5  # size of dream3d.cameras.camera_features
T5_TYPES = ("t5", "mt5", "umt5")
IF_T5_TOKENS = 77  # DeepFloyd IF's T5 encoder was trained on 77-token prompts (diffusers' IFPipeline.encode_prompt)


class Prior:
    """A frozen diffusion model: text encoding, image encoding, ε-prediction and preview decoding.

    Attributes: kind ("latent"|"pixel"), resolution (image size in pixels fed to `encode_images`'s resize),
    camera_aware, prediction_type, alphas_cumprod (T,) fp32 on device, num_train_timesteps, recommended_cfg
    (from dream3d_prior.json, or None), strict_vocabulary, metadata, device, dtype, and the components
    tokenizer, text_encoder, unet, scheduler, vae (None for pixel priors).
    """

    def __init__(self, name: str, tokenizer: Any, text_encoder: torch.nn.Module, unet: torch.nn.Module,
                 scheduler: Any, vae: torch.nn.Module | None = None, metadata: dict | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.metadata = dict(metadata or {})
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.text_encoder = _freeze(_place(text_encoder, self.device, self.dtype))
        self.unet = _freeze(_place(unet, self.device, self.dtype))
        self.vae = _freeze(_place(vae, self.device, torch.float32)) if vae is not None else None
        self.kind = "latent" if vae is not None else "pixel"

        ucfg = self.unet.config
        self.camera_aware = ucfg.get("class_embed_type") == "projection"
        if self.camera_aware and ucfg.get("projection_class_embeddings_input_dim") != CAMERA_FEATURES:
            raise fail(name, f"camera-aware UNet takes {ucfg.get('projection_class_embeddings_input_dim')}-d "
                             f"class labels, dream3d camera features are {CAMERA_FEATURES}-d")
        if not hasattr(scheduler, "alphas_cumprod"):
            raise fail(name, f"scheduler {type(scheduler).__name__} has no alphas_cumprod")
        self.alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod).to(self.device, torch.float32)
        self.num_train_timesteps = int(self.alphas_cumprod.shape[0])
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise fail(name, f"unsupported prediction_type {self.prediction_type!r}")

        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        size = ucfg.sample_size if isinstance(ucfg.sample_size, int) else ucfg.sample_size[0]
        self.resolution = int(self.metadata.get("resolution", size * self.vae_scale_factor))
        self.channels = int(ucfg.in_channels)
        self.recommended_cfg = self.metadata.get("recommended_cfg")
        self.strict_vocabulary = bool(self.metadata.get("strict_vocabulary", False))
        self.max_length = _max_length(tokenizer, text_encoder)
        ttype = getattr(self.text_encoder.config, "model_type", "")
        # T5 always takes the padding mask (as in diffusers' IF pipeline); CLIP only if its config asks for it
        self._text_mask = ttype in T5_TYPES or bool(getattr(self.text_encoder.config,
                                                                          "use_attention_mask", False))
        self._text_cache: dict[str, torch.Tensor] = {}

    # --- loading ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, memory: MemoryOptions | None = None) -> "Prior":
        """Load a diffusers-layout folder or hub id (SD 1.x/2.x, DeepFloyd IF stage I, dream3d shapes prior).

        dtype: of the text encoder and UNet (None: `memory.precision`, by default fp16 on CUDA and fp32 on the
        CPU); memory: the memory options (`dream3d.priors.memory`).

        Raises ModelLoadError ("cannot load prior 'X': <reason>") for missing folders, unreachable hub ids,
        missing/broken components.
        """
        name = str(name_or_path)
        index, meta, _ = read_index(name)
        dev = torch.device(device)
        memory = memory or MemoryOptions()
        dt = dtype or memory.dtype(dev)
        comps = {c: load_component(name, index, c, dt) for c in NEEDED}
        for c in OPTIONAL:
            if _spec(index, c):
                comps[c] = load_component(name, index, c, torch.float32)
        prior = cls(name, comps["tokenizer"], comps["text_encoder"], comps["unet"], comps["scheduler"],
                    comps.get("vae"), meta, dev, dt)
        apply_memory_options(prior.unet, prior.text_encoder, prior.vae, memory, dev)
        return prior

    # --- text -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings (B, L, D) in the prior's dtype on its device; each prompt string is encoded once.

        With a strict vocabulary, raises PromptError naming the first unknown word or a too-long prompt (other
        priors are checked up front with `check_prompt`).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        todo = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if todo:
            if self.strict_vocabulary:
                for p in todo:
                    self.check_prompt(p)
            tok = self.tokenizer(todo, padding="max_length", max_length=self.max_length, truncation=True,
                                 return_tensors="pt")
            kwargs = {"attention_mask": tok.attention_mask.to(self.device)} if self._text_mask else {}
            emb = self.text_encoder(tok.input_ids.to(self.device), **kwargs)[0]
            self._text_cache.update(zip(todo, emb))
        return torch.stack([self._text_cache[p] for p in prompts])

    def check_prompt(self, prompt: str) -> None:
        """PromptError if `prompt` needs more than the prior's `max_length` tokens (special tokens included; the
        text encoder would silently drop the rest), or, with a strict vocabulary, if the tokenizer maps one of its
        words to the unknown token."""
        n = len(self.tokenizer(prompt).input_ids)
        if n > self.max_length:
            raise PromptError(f"the prompt '{safe_text(prompt, 60)}' is too long for prior '{safe_text(self.name, 80)}'"
                              f": {n} tokens, at most {self.max_length} ({self._limit_name()}); shorten it")
        if not self.strict_vocabulary:
            return
        tok = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        unk = self.tokenizer.unk_token_id
        for tid, (a, b) in zip(tok.input_ids, tok.offset_mapping):
            if unk is not None and tid == unk:
                raise PromptError(f"unknown word '{safe_text(prompt[a:b], 40)}' in '{safe_text(prompt, 80)}'"
                                  f"{self._known_words()}")

    def _limit_name(self) -> str:
        """Whose token limit `max_length` is, for messages."""
        ttype = getattr(self.text_encoder.config, "model_type", "")
        if ttype in T5_TYPES:
            return "the T5 text encoder as DeepFloyd IF uses it"
        if ttype == "clip_text_model" and not self.strict_vocabulary:
            return "the CLIP text encoder's limit"
        return "this prior's tokenizer"

    def _known_words(self) -> str:
        vocab = self.tokenizer.get_vocab()
        if len(vocab) > 100:
            return ""
        words = sorted(w for w in vocab if w.isalpha() and w not in self.tokenizer.all_special_tokens)
        return "; this prior knows: " + " ".join(words) + "; other words need an open-vocabulary --prior"

    # --- images -----------------------------------------------------------------------------------------------
    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """x0 from rgb (B,3,H,W) in [0,1]; differentiable w.r.t. rgb.

        latent: (B,4,R/f,R/f) = scaling_factor·(posterior mean − shift) of the VAE on rgb resized to R=resolution;
        pixel: (B,3,R,R) in [-1,1]. Returned in fp32.
        """
        x = rgb.to(self.device, torch.float32)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, (self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        x = x * 2.0 - 1.0
        if self.vae is None:
            return x
        z = self.vae.encode(x).latent_dist.mean
        shift = self.vae.config.get("shift_factor") or 0.0
        return (z - shift) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Preview images (B,3,H,W) in [0,1] from x0 (the inverse of `encode_images`, up to the resize)."""
        x0 = x0.to(self.device, torch.float32)
        if self.vae is not None:
            shift = self.vae.config.get("shift_factor") or 0.0
            x0 = self.vae.decode(x0 / self.vae.config.scaling_factor + shift).sample
        return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)

    def sample_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of x0 (what `encode_images` returns per image)."""
        s = self.resolution // self.vae_scale_factor
        return self.channels, s, s

    # --- denoising --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int, emb: torch.Tensor,
            cameras: Cameras | torch.Tensor | None = None) -> torch.Tensor:
        """ε-prediction (B,C,h,w) fp32 for noisy x_t (B,C,h,w), integer timesteps t (B,) or scalar, embeddings
        emb (B,L,D) (or (1,L,D), broadcast).

        cameras (camera-aware priors only; others ignore it): `Cameras` or camera features (N,5), with N = B or N
        dividing B (tiled along the batch, matching `torch.cat([x]*k)` of batched CFG); None = dropped camera
        (zero features).
        """
        return self.eps_grad(x_t, t, emb, cameras)

    def eps_grad(self, x_t: torch.Tensor, t: torch.Tensor | int, emb: torch.Tensor,
                 cameras: Cameras | torch.Tensor | None = None) -> torch.Tensor:
        """`eps` with autograd left to the caller (for adapters trained on the UNet, e.g. VSD's LoRA)."""
        b = x_t.shape[0]
        t = torch.as_tensor(t, device=self.device).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        emb = emb.to(self.device, self.dtype)
        if emb.shape[0] == 1 and b > 1:
            emb = emb.expand(b, -1, -1)
        kwargs = {}
        if self.camera_aware:
            kwargs["class_labels"] = self.camera_condition(cameras, b)
        out = self.unet(x_t.to(self.device, self.dtype), t, encoder_hidden_states=emb, **kwargs).sample
        out = drop_learned_variance(out.float(), x_t.shape[1])
        acp = self.alphas_cumprod[t]
        return to_eps(out, x_t.to(self.device, torch.float32), acp.sqrt(), (1.0 - acp).sqrt(), self.prediction_type)

    def camera_condition(self, cameras: Cameras | torch.Tensor | None, batch: int) -> torch.Tensor:
        """Camera features (batch, 5) in the UNet's dtype; zeros for None (the 'dropped camera' condition)."""
        if cameras is None:
            feats = torch.zeros(batch, CAMERA_FEATURES)
        else:
            feats = cameras if isinstance(cameras, torch.Tensor) else camera_features(cameras)
        n = feats.shape[0]
        if n != batch:
            if batch % n:
                raise ValueError(f"{n} cameras for a batch of {batch}")
            feats = feats.repeat(batch // n, 1)
        return feats.to(self.device, self.dtype)

    def __repr__(self) -> str:
        return (f"Prior({self.name!r}, kind={self.kind}, resolution={self.resolution}, "
                f"camera_aware={self.camera_aware}, prediction={self.prediction_type}, dtype={self.dtype})")


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move to device, casting only when needed (diffusers warns on every dtype cast)."""
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype)
    return module.to(device)


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


def _max_length(tokenizer: Any, text_encoder: torch.nn.Module) -> int:
    """The prompt length in tokens (and padding length): the tokenizer's model_max_length unless it is unset
    (huge), then the encoder's limit or 77 (CLIP's, SD); a T5 encoder (IF) at most `IF_T5_TOKENS`."""
    n = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if not 0 < n < 100_000:
        n = int(getattr(text_encoder.config, "max_position_embeddings", 0) or 77)
    if getattr(text_encoder.config, "model_type", "") in T5_TYPES:
        n = min(n, IF_T5_TOKENS)
    return n

