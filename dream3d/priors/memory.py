"""Memory options of a loaded prior, for small GPUs: weight precision, attention and VAE slicing, channels-last
layout, sequential CPU offload. Each uses what diffusers / accelerate provide; each keeps the ε-predictions equal
within the precision it trades (tests/test_prior_memory.py states the tolerances).

    precision: "auto" (fp16 text encoder and UNet on CUDA, fp32 on the CPU) | "fp32" | "fp16" | "bf16"
    attention_slicing: compute cross/self attention in slices (`UNet2DConditionModel.set_attention_slice("auto")`)
    vae_slicing: encode a batch one image at a time (`AutoencoderKL.enable_slicing`)
    channels_last: the UNet's weights in channels-last memory layout (faster convolutions on some GPUs)
    cpu_offload: keep the UNet and text encoder on the CPU and move each submodule to the GPU only while it runs
        (`accelerate.cpu_offload`); needs a CUDA device
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.errors import ConfigError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class MemoryOptions:
    """See the module doc. The defaults are today's behaviour: nothing sliced, offloaded or re-laid out."""

    precision: str = "auto"
    attention_slicing: bool = False
    vae_slicing: bool = False
    channels_last: bool = False
    cpu_offload: bool = False

    def dtype(self, device: torch.device) -> torch.dtype:
        """The text encoder's and UNet's dtype on `device`."""
        if self.precision == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        if self.precision not in PRECISIONS:
            raise ConfigError(f"prior precision must be one of auto, {', '.join(PRECISIONS)}; got {self.precision!r}")
        return PRECISIONS[self.precision]


def apply_memory_options(unet: torch.nn.Module, text_encoder: torch.nn.Module, vae: torch.nn.Module | None,
                         options: MemoryOptions, device: torch.device) -> None:
    """Switch on the slicing, layout and offload options on the (placed, frozen) components, in place."""
    if options.attention_slicing:
        unet.set_attention_slice("auto")
    if options.vae_slicing and vae is not None:
        vae.enable_slicing()
    if options.channels_last:
        unet.to(memory_format=torch.channels_last)
    if options.cpu_offload:
        if device.type != "cuda":
            raise ConfigError("prior cpu_offload moves weights to a CUDA device as they run; there is none here")
        from accelerate import cpu_offload

        for module in (unet, text_encoder):
            cpu_offload(module.to("cpu"), execution_device=device)
