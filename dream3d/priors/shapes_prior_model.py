"""Architecture of the bundled shapes prior: a small camera-aware, text-conditioned pixel diffusion model.

Components are standard diffusers/transformers classes so the folder loads through the same loader as Stable
Diffusion or DeepFloyd IF folders:
- tokenizer: word-level `PreTrainedTokenizerFast` over the shapes-world vocabulary (unknown words map to [UNK]);
- text_encoder: a 2-layer `CLIPTextModel` (64-d);
- unet: `UNet2DConditionModel`, 32x32x3, cross-attention at 8x8 and 4x4, camera features (5-d, see
  `dream3d.cameras.camera_features`) added to the time embedding through the "projection" class embedding;
- scheduler: `DDPMScheduler` (1000 steps, cosine betas, epsilon prediction).
"""

from __future__ import annotations

import json
from pathlib import Path

from dream3d.cameras import VIEW_SUFFIXES
from dream3d.shapes.primitives import COLORS, SHAPES

RESOLUTION = 32
MAX_TOKENS = 12
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def vocabulary() -> list[str]:
    """Every word the shapes prior knows (special tokens first)."""
    views = [s.split()[1] for s in VIEW_SUFFIXES]
    return SPECIAL_TOKENS + ["a", "an", ",", "view"] + list(COLORS) + list(SHAPES) + views


def build_tokenizer():
    """The shapes prior's tokenizer (see `word_tokenizer`)."""
    return word_tokenizer(vocabulary(), MAX_TOKENS)


def word_tokenizer(words: list[str], max_length: int):
    """Word-level fast tokenizer over `words` (which start with SPECIAL_TOKENS): lower-cases, splits words and
    punctuation, maps unknown words to [UNK], wraps in [BOS] ... [EOS]."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=max_length)


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = vocabulary()
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=64,
                         pad_token_id=0, bos_token_id=vocab.index("[BOS]"), eos_token_id=vocab.index("[EOS]"))
    return CLIPTextModel(cfg)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(48, 96, 128, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
        class_embed_type="projection", projection_class_embeddings_input_dim=5)


def build_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                         clip_sample=False)


def save_prior_folder(out: Path, tokenizer, text_encoder, unet, scheduler, metadata: dict) -> None:
    """Write the diffusers layout: one `save_pretrained` folder per component, model_index.json, dream3d_prior.json."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out / "tokenizer")
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "Dream3DShapesPrior",
        "_diffusers_version": __import__("diffusers").__version__,
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    (out / "dream3d_prior.json").write_text(json.dumps(metadata, indent=2))
