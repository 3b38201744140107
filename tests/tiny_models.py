"""Tiny random diffusers folders for tests: SD-style (latent), IF-style (pixel) and bundled-style (camera-aware).

Each builder writes the standard diffusers layout (one `save_pretrained` sub-folder per component plus
`model_index.json`) and returns the folder. Everything is built offline: the tokenizers are made from small
in-code vocabularies (a byte-level BPE for CLIP, a Unigram model for T5, a word-level model for the bundled style).
Weights are random (seeded), so outputs mean nothing; only shapes, layouts and formulas are testable.
"""

from __future__ import annotations

import json
import string
from contextlib import contextmanager
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


# model_index.json components of an SD 1.x/2.x folder (as diffusers' StableDiffusionPipeline saves them)
SD_COMPONENTS = {
    "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
    "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
    "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
    "feature_extractor": [None, None], "requires_safety_checker": False}


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
    _write_index(out, "StableDiffusionPipeline", SD_COMPONENTS)
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


# --- full-size random-weight folders (the public architectures of SD 2.1-base and IF-I-M; no download) ---------
#
# The values are the published configs. Stable Diffusion 2.1-base: the hub repo stabilityai/stable-diffusion-2-1-base,
# files unet/config.json, vae/config.json, text_encoder/config.json (OpenCLIP ViT-H/14 text tower, penultimate layer:
# 23 layers) and scheduler/scheduler_config.json (epsilon prediction; the 768-px stable-diffusion-2-1 is the
# v-prediction one). DeepFloyd IF stage I: the structure of DeepFloyd/IF-I-XL-v1.0's unet/config.json (the largest,
# block_out_channels 704-1408-2112-2816, cross-attention 2816) at model_channels 192 (block_out_channels
# 192-384-576-768, cross-attention 4 x 192), the width that gives IF-I-M's published size: 372M parameters, the
# "400M" of the IF-I-M-v1.0 model card (at XL's width the same structure has 4.30B, its card's "4.3B"); the
# scheduler is the one diffusers' scripts/convert_if.py writes for stage I; the text encoder is T5 v1.1 XXL's
# (google/t5-v1_1-xxl config.json: d_model 4096, 64 heads of 64, gated-GELU d_ff 10240) cut to `text_layers`
# layers. The tokenizers are the small
# in-code ones above (the vocabulary size changes only the embedding table) at the real lengths (77 tokens).

SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1)
SD21_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", scaling_factor=0.18215)
SD21_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                 max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5)
SD21_BASE_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                           beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
                           set_alpha_to_one=False, steps_offset=1)
IF_I_M_UNET = dict(
    sample_size=64, in_channels=3, out_channels=6, layers_per_block=3, block_out_channels=(192, 384, 576, 768),
    cross_attention_dim=768, attention_head_dim=64, encoder_hid_dim=4096, encoder_hid_dim_type="text_proj",
    addition_embed_type="text", addition_embed_type_num_heads=64, cross_attention_norm="group_norm",
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                      "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                    "ResnetUpsampleBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn", resnet_time_scale_shift="scale_shift", act_fn="gelu",
    norm_num_groups=32, upcast_attention=False)
IF_SCHEDULER = dict(variance_type="learned_range", beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                    thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5)
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_heads=64, feed_forward_proj="gated-gelu",
              relative_attention_num_buckets=32, layer_norm_epsilon=1e-6)


def _save_each(out: Path, half: bool, builders: dict) -> None:
    """Build, save and free one component at a time (the peak memory is one fp32 component, not the model)."""
    for name, build in builders.items():
        comp = build()
        if half and isinstance(comp, torch.nn.Module):
            comp = comp.half()
        comp.save_pretrained(out / name)
        del comp


def save_sd21_base_random(out: str | Path, text_layers: int = 23, half: bool = True, seed: int = 0) -> Path:
    """Stable Diffusion 2.1-base's architecture with random weights: UNet 865M parameters (4x64x64 latents, 1024-d
    cross-attention), VAE (x8: 512 px -> 4x64x64), CLIP text encoder 1024-d with `text_layers` layers (23 as
    published), DDIM scaled_linear 0.00085..0.012, epsilon. Saved in fp16 when `half` (about 2.2 GB)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer(max_length=77)

    def text_encoder():
        torch.manual_seed(seed)
        return CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), **{**SD21_TEXT, "num_hidden_layers": text_layers},
                                            bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()

    def seeded(cls, cfg, k):
        def build():
            torch.manual_seed(seed + k)
            return cls(**cfg)
        return build

    _save_each(out, half, {"tokenizer": lambda: tok, "text_encoder": text_encoder,
                           "unet": seeded(UNet2DConditionModel, SD21_BASE_UNET, 1),
                           "vae": seeded(AutoencoderKL, SD21_BASE_VAE, 2),
                           "scheduler": lambda: DDIMScheduler(**SD21_BASE_SCHEDULER)})
    _write_index(out, "StableDiffusionPipeline", SD_COMPONENTS)
    return out


def save_if_i_m_random(out: str | Path, text_layers: int = 1, half: bool = True, seed: int = 0) -> Path:
    """DeepFloyd IF-I-M's architecture with random weights: pixel UNet 372M parameters (3x64x64 in, 6 out: ε and
    the learned variance), T5 v1.1 XXL-width encoder (d_model 4096) with `text_layers` layers, learned_range DDPM.
    Saved in fp16 when `half` (about 1.1 GB with one T5 layer)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = t5_tokenizer(max_length=77)

    def text_encoder():
        torch.manual_seed(seed)
        return T5EncoderModel(T5Config(vocab_size=len(tok), num_layers=text_layers, pad_token_id=0, eos_token_id=1,
                                       **T5_XXL)).eval()

    def unet():
        torch.manual_seed(seed + 1)
        return UNet2DConditionModel(**IF_I_M_UNET)

    _save_each(out, half, {"tokenizer": lambda: tok, "text_encoder": text_encoder, "unet": unet,
                           "scheduler": lambda: DDPMScheduler(**IF_SCHEDULER)})
    _write_index(out, "IFPipeline", {
        "tokenizer": ["transformers", "T5Tokenizer"], "text_encoder": ["transformers", "T5EncoderModel"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "watermarker": ["deepfloyd_if", "IFWatermarker"], "requires_safety_checker": False})
    return out


# The full-size recipes: the shipped recipe when it exists (configs/sd-sds.yaml, ...), else the settings the
# recipes are meant to carry (DreamFusion-SD: CFG 101 in the diffusers form, 64x64 renders, one view per step).
FULL_SIZE_RENDER = ["render.height=64", "render.width=64", "render.batch_size=1"]
FULL_SIZE_FALLBACKS = {
    "sd-sds": ["guidance.method=sds", "guidance.guidance_scale=101"] + FULL_SIZE_RENDER,
    "sd-vsd": ["guidance.method=vsd", "guidance.guidance_scale=7.5"] + FULL_SIZE_RENDER,
    "if-sds": ["guidance.method=sds", "guidance.guidance_scale=21"] + FULL_SIZE_RENDER,
}
# what a short measured run leaves out: the export, previews and intermediate checkpoints
QUIET_RUN = ["export.enabled=false", "preview_every=100000", "checkpoint_every=100000"]


def full_size_config(recipe: str, prior: str | Path, steps: int, device: str = "cpu", extra: list[str] = (),
                     prompt: str = "a hamburger"):
    """(RunConfig, source) for `steps` steps of `recipe` ("sd-sds", "sd-vsd", "if-sds") with the prior folder
    `prior`; source is "configs/<recipe>.yaml" or "overrides <...>" when that recipe is not shipped."""
    from dream3d.config import load_config
    from dream3d.recipes import recipe_names, recipe_path

    shipped = recipe in recipe_names()
    overrides = ([] if shipped else FULL_SIZE_FALLBACKS[recipe]) + [
        f"prior={prior}", f"steps={steps}", f"device={device}", *extra]
    cfg = load_config(recipe_path(recipe) if shipped else None, overrides)
    cfg.prompt = prompt
    return cfg, (f"configs/{recipe}.yaml" if shipped else "overrides " + " ".join(FULL_SIZE_FALLBACKS[recipe]))


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc), so that RSS shows what is live."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: /proc/self/clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB since the last `reset_peak_rss` (resource.getrusage)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20  # bytes on macOS, KiB on Linux


# --- analytic priors (duck-typed `Prior`s with closed-form ε-predictions) --------------------------------------

def ddpm_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t}(1 − β_s) for linear betas, computed here (not by diffusers)."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).to(dtype)


def randn64(*shape: int, seed: int = 0) -> torch.Tensor:
    """Standard normal float64 noise of `shape` from its own seeded generator."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def random_targets(shape: tuple[int, ...], *prompts: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """One random float64 target x* of `shape` per prompt (for `PointMassPrior` / `GaussianPrior`)."""
    gen = torch.Generator().manual_seed(seed)
    return {p: torch.randn(shape, generator=gen).double() for p in prompts}


@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to n inside the block (one thread: bitwise-reproducible backward passes)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


class GaussianPrior(PointMassPrior):
    """A pixel prior whose data distribution, given prompt y, is N(μ(y), std²·I) (μ: the `targets`, as in
    `PointMassPrior`); std = 0 is the point mass.

    Its ε-prediction is the exact posterior mean E[ε | x_t]: with x_t = α x0 + σ ε, x0 ~ N(μ, std²I) and
    ε ~ N(0, I) independent, (ε, x_t) are jointly Gaussian with Cov(ε, x_t) = σI and Var(x_t) = (α²std² + σ²)I, so

        ε̂(x_t) = σ (x_t − α μ) / (α² std² + σ²)      (α² = ᾱ_t, σ² = 1 − ᾱ_t; float64).

    Its probability-flow ODE is solvable: in x̄ = x_t/α, λ = σ/α, x̄(λ) − μ = (x0 − μ)·√(std² + λ²)/std.
    """

    def __init__(self, targets: dict[str, torch.Tensor], std: float = 0.5, **kw):
        super().__init__(targets, **kw)
        self.std = float(std)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras=None) -> torch.Tensor:
        self.eps_batches.append(x_t.shape[0])
        self.cameras_seen.append(cameras)
        abar = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        mu = emb.reshape(x_t.shape)
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * mu) / (abar * self.std ** 2 + 1 - abar)


class OraclePrior(PointMassPrior):
    """Predicts exactly the noise it is told (`self.noise`, (B,C,H,W)), for every prompt and branch."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__({"": torch.zeros(shape)}, default=torch.zeros(shape))
        self.noise: torch.Tensor | None = None

    def eps(self, x_t, t, emb, cameras=None):
        self.eps_batches.append(x_t.shape[0])
        k = x_t.shape[0] // self.noise.shape[0]
        return torch.cat([self.noise] * k)
