"""Tiny random diffusers folders for tests: SD-style (latent), IF-style (pixel) and bundled-style (camera-aware).

Each builder writes the standard diffusers layout (one `save_pretrained` sub-folder per component plus
`model_index.json`) and returns the folder. Everything is built offline: the tokenizers are made from small
in-code vocabularies (a byte-level BPE for CLIP, a Unigram model for T5, a word-level model for the bundled style).
Weights are random (seeded), so outputs mean nothing; only shapes, layouts and formulas are testable.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

WORDS = ["a", "red", "blue", "green", "cube", "sphere", "cone", "front", "side", "back", "overhead", "view", "photo",
         "of", "dog"]


def _save(out: Path, **components) -> None:
    """`save_pretrained` each component into its sub-folder (the diffusers layout)."""
    for name, comp in components.items():
        comp.save_pretrained(out / name)


def _write_index(out: Path, class_name: str, components: dict[str, list]) -> None:
    index = {"_class_name": class_name, "_diffusers_version": __import__("diffusers").__version__, **components}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))


def clip_tokenizer(max_length: int = 16):
    """A CLIP BPE tokenizer over printable ASCII characters (plus a few merged words)."""
    from transformers import CLIPTokenizer

    chars = [c for c in string.printable if c.strip() and ord(c) < 127]
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars] + ["re", "red</w>"]:
        vocab.setdefault(tok, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[("r", "e"), ("re", "d</w>")], model_max_length=max_length)


def clip_text_encoder(vocab_size: int, hidden: int = 32, max_length: int = 16, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=max_length,
                         projection_dim=hidden, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(cfg).eval()


def t5_tokenizer(max_length: int = 16):
    """A T5 (Unigram) tokenizer: single letters, ',', and whole words from WORDS."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -5.0) for c in string.ascii_lowercase + ","] + [("\u2581" + w, -1.0) for w in WORDS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def save_tiny_sd(out: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """SD-style latent prior: AutoencoderKL (x2 downsampling, 16 px images -> 4x8x8 latents) + CLIP + UNet."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer()
    te = clip_text_encoder(len(tok), seed=seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=16)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=False)
    _save(out, tokenizer=tok, text_encoder=te, vae=vae, unet=unet, scheduler=sched)
    _write_index(out, "StableDiffusionPipeline", {
        "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False})
    return out


def save_tiny_if(out: str | Path, seed: int = 0) -> Path:
    """IF-style pixel prior: T5 encoder + UNet (8x8x3 in, 6 out: ε and learned variance) + learned_range DDPM."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = t5_tokenizer()
    torch.manual_seed(seed)
    te = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                 pad_token_id=0, eos_token_id=1)).eval()
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8, encoder_hid_dim=16,
        encoder_hid_dim_type="text_proj", addition_embed_type="text", addition_embed_type_num_heads=2,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", resnet_time_scale_shift="scale_shift",
        time_embedding_act_fn="gelu")
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                          prediction_type="epsilon", thresholding=True, clip_sample=True)
    _save(out, tokenizer=tok, text_encoder=te, unet=unet, scheduler=sched)
    _write_index(out, "IFPipeline", {
        "tokenizer": ["transformers", "T5Tokenizer"], "text_encoder": ["transformers", "T5EncoderModel"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "watermarker": ["deepfloyd_if", "IFWatermarker"], "requires_safety_checker": False})
    return out


def word_tokenizer(max_length: int = 12):
    """Word-level fast tokenizer (the bundled prior's kind): unknown words become [UNK]."""
    from dream3d.priors.shapes_prior_model import SPECIAL_TOKENS
    from dream3d.priors.shapes_prior_model import word_tokenizer as build

    return build(SPECIAL_TOKENS + [","] + WORDS, max_length)


def save_tiny_bundled(out: str | Path, strict_vocabulary: bool = True, half: bool = True, seed: int = 0) -> Path:
    """Bundled-style pixel prior: word-level tokenizer, CLIP encoder, camera-aware UNet (projection class embedding
    over the 5-d camera features), DDPM scheduler, and `dream3d_prior.json` metadata. Saved in fp16 like the lead's
    exported prior when `half`."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = word_tokenizer()
    te = clip_text_encoder(len(tok), max_length=12, seed=seed)
    te.config.bos_token_id, te.config.eos_token_id, te.config.pad_token_id = 2, 3, 0
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), class_embed_type="projection",
                                projection_class_embeddings_input_dim=5)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                          clip_sample=False)
    if half:
        te, unet = te.half(), unet.half()
    _save(out, tokenizer=tok, text_encoder=te, unet=unet, scheduler=sched)
    _write_index(out, "Dream3DShapesPrior", {
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "text_encoder": ["transformers", "CLIPTextModel"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"]})
    (out / "dream3d_prior.json").write_text(json.dumps(
        {"resolution": 8, "recommended_cfg": 3.0, "strict_vocabulary": strict_vocabulary}))
    return out


# --- analytic priors (duck-typed `Prior`s with closed-form ε-predictions) --------------------------------------

def ddpm_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t}(1 − β_s) for linear betas, computed here (not by diffusers)."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).to(dtype)


class PointMassPrior:
    """A pixel prior whose data distribution, given prompt y, is a point mass at x*(y): ε̂(x_t) = (x_t − α x*)/σ.

    `targets` maps prompt strings to x* (C,H,W); prompts not in it use `default` (if given). Embeddings are the
    flattened targets (B,1,C·H·W), so the ε-prediction depends on the prompt only through them. Everything in
    float64. Records calls: `eps_batches` (batch size of each eps call), `text_calls` (prompt lists),
    `cameras_seen` (the cameras argument of each eps call).
    """

    kind = "pixel"
    recommended_cfg = None
    camera_aware = False

    def __init__(self, targets: dict[str, torch.Tensor], default: torch.Tensor | None = None,
                 alphas_cumprod: torch.Tensor | None = None):
        self.targets, self.default = targets, default
        self.alphas_cumprod = ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        self.num_train_timesteps = self.alphas_cumprod.shape[0]
        self.shape = tuple(next(iter(targets.values())).shape)
        self.resolution = self.shape[-1]
        self.eps_batches: list[int] = []
        self.text_calls: list[list[str]] = []
        self.cameras_seen: list = []

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        self.text_calls.append(list(prompts))
        rows = [self.targets.get(p, self.default) for p in prompts]
        if any(r is None for r in rows):
            raise KeyError(f"no target for {prompts}")
        return torch.stack([r.reshape(1, -1) for r in rows]).double()

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb  # identity: x0 is the image itself

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras=None) -> torch.Tensor:
        self.eps_batches.append(x_t.shape[0])
        self.cameras_seen.append(cameras)
        abar = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        x_star = emb.reshape(x_t.shape)
        return (x_t - abar.sqrt() * x_star) / (1.0 - abar).sqrt()

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return x0


class OraclePrior(PointMassPrior):
    """Predicts exactly the noise it is told (`self.noise`, (B,C,H,W)), for every prompt and branch."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__({"": torch.zeros(shape)}, default=torch.zeros(shape))
        self.noise: torch.Tensor | None = None

    def eps(self, x_t, t, emb, cameras=None):
        self.eps_batches.append(x_t.shape[0])
        k = x_t.shape[0] // self.noise.shape[0]
        return torch.cat([self.noise] * k)
