"""SDS iteration speed with a full-size Stable-Diffusion-2.1-base architecture (random weights).

Speed does not depend on the weights, so this measures dream3d's CUDA path (fp16 prior, hash grid, ray marching)
without downloading a checkpoint: builds SD-2.1-base's UNet and VAE (and a 1-layer 1024-d CLIP text encoder; text
embeddings are cached, so its size does not matter), saves them as a diffusers folder, and runs generation steps at
64x64 renders. Prints iterations/s. Usage: python benchmarks/sd_speed.py [--steps 30] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build_sd21_folder(out: Path) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tiny_models import _write_index, clip_tokenizer

    tok = clip_tokenizer(max_length=77)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=1024, intermediate_size=4096,
                                      num_hidden_layers=1, num_attention_heads=16, max_position_embeddings=77))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False)
    for name, comp in (("tokenizer", tok), ("text_encoder", te), ("unet", unet), ("vae", vae), ("scheduler", sched)):
        comp.save_pretrained(out / name)
    _write_index(out, "StableDiffusionPipeline", {
        "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    from dream3d.config import load_config
    from dream3d.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        folder = build_sd21_folder(Path(tmp) / "sd21")
        print(f"built SD-2.1-base-size folder in {time.time() - t0:.1f}s")
        cfg = load_config(None, [f"prior={folder}", f"device={a.device}", f"steps={a.steps + 5}",
                                 f"render.height={a.size}", f"render.width={a.size}", "render.batch_size=1",
                                 "guidance.guidance_scale=101", "export.enabled=false", "preview_every=100000",
                                 "checkpoint_every=100000", "render.shading_warmup_steps=0"])
        cfg.prompt = "a red cube"
        trainer = Trainer(cfg, Path(tmp) / "run")
        print("renderer backend:", trainer.renderer.resolved_backend(trainer.device),
              "| encoding backend:", trainer.renderer.geometry.encoding.backend_for(trainer.device),
              "| prior dtype:", trainer.prior.dtype)
        for _ in range(5):  # warm-up
            trainer.train_step()
            trainer.step += 1
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.time()
        for _ in range(a.steps):
            trainer.train_step()
            trainer.step += 1
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        print(f"SDS with SD-2.1-base architecture, {a.size}x{a.size} renders, batch 1: "
              f"{a.steps / dt:.2f} it/s ({1000 * dt / a.steps:.0f} ms/step) on {trainer.device}")
        if trainer.device.type == "cuda":
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
