"""Training of the bundled shapes prior (`dream3d prior train`).

Data comes from the shapes world: random (shape, color) and random cameras from `dream3d.cameras.sample_cameras`,
rendered by `dream3d.shapes.render.render_shapes`; the prompt is "a <color> <shape>" plus the camera's view
suffix. Prompt and camera are each dropped with probability ~10% so the prior supports classifier-free guidance on
text (and on camera). Every random draw of step k comes from a generator seeded with (seed, k), so a resumed run
continues exactly. Training state is checkpointed atomically to `OUT/train_state/`; the EMA weights are written
to OUT in diffusers layout (fp16) at the end, and also at every checkpoint so a stopped run still leaves a prior.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dream3d.cameras import camera_features, sample_cameras, view_index, VIEW_SUFFIXES
from dream3d.checkpoint import (find_checkpoint, load_checkpoint, load_module_tensors, load_optimizer_tensors,
                                module_tensors, optimizer_tensors, save_checkpoint)
from dream3d.errors import Dream3DError
from dream3d.priors import shapes_prior_model as spm
from dream3d.shapes.primitives import COLORS, SHAPES
from dream3d.shapes.render import render_shapes

SHAPE_NAMES, COLOR_NAMES = list(SHAPES), list(COLORS)
VIEW_NAMES = [s.split()[1] for s in VIEW_SUFFIXES]


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def prompt_token_table(tokenizer) -> torch.Tensor:
    """Token ids (S, C, V+1, T) for every shape, color and view (last view index = no suffix); row of '' appended."""
    ids = torch.zeros(len(SHAPE_NAMES), len(COLOR_NAMES), len(VIEW_NAMES) + 1, spm.MAX_TOKENS, dtype=torch.long)
    for si, s in enumerate(SHAPE_NAMES):
        for ci, c in enumerate(COLOR_NAMES):
            texts = [f"a {c} {s}, {v} view" for v in VIEW_NAMES] + [f"a {c} {s}"]
            ids[si, ci] = tokenizer(texts, padding="max_length", max_length=spm.MAX_TOKENS, truncation=True,
                                    return_tensors="pt").input_ids
    return ids


def make_batch(batch: int, gen: torch.Generator, resolution: int, device: torch.device,
               shape_probs: torch.Tensor | None = None):
    """Render one training batch: images (B,3,H,W) in [-1,1], shape/color/view indices, camera features (B,5).

    shape_probs: (S,) sampling probability per shape (default uniform).
    """
    if shape_probs is None:
        si = torch.randint(len(SHAPE_NAMES), (batch,), generator=gen)
    else:
        si = torch.multinomial(shape_probs, batch, replacement=True, generator=gen)
    ci = torch.randint(len(COLOR_NAMES), (batch,), generator=gen)
    cams = sample_cameras(batch, generator=gen)
    rgb, _ = render_shapes([SHAPE_NAMES[i] for i in si], [COLOR_NAMES[i] for i in ci], cams.to(device), resolution)
    vi = view_index(cams.elevation_deg, cams.azimuth_deg)
    return rgb * 2 - 1, si, ci, vi, camera_features(cams)


def _render_pool(size: int, seed: int, resolution: int, device: torch.device,
                 shape_probs: torch.Tensor | None = None, chunk: int = 2048):
    """Pre-render a pool of training samples (used on GPUs, where rendering per step would dominate)."""
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    parts = [make_batch(min(chunk, size - i), gen, resolution, device, shape_probs) for i in range(0, size, chunk)]
    img = torch.cat([((p[0] + 1) * 127.5).round().to(torch.uint8) for p in parts])
    return (img, *(torch.cat([p[k] for p in parts]).to(device) for k in range(1, 5)))


def shape_probabilities(weights: dict[str, float] | None) -> torch.Tensor | None:
    """Normalised (S,) shape sampling probabilities from {shape: relative weight} (unnamed shapes weigh 1)."""
    if not weights:
        return None
    unknown = sorted(set(weights) - set(SHAPE_NAMES))
    if unknown or any(w <= 0 for w in weights.values()):
        raise Dream3DError(f"shape weights must name shapes ({', '.join(SHAPE_NAMES)}) with positive weights; "
                           f"got {weights}")
    w = torch.tensor([float(weights.get(s, 1.0)) for s in SHAPE_NAMES])
    return w / w.sum()


def _lr_at(step: int, base_lr: float, steps: int, warmup: int = 500) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


@dataclass
class _Models:
    """The trained modules, their EMA copies, the optimizer and the parameter lists it and the EMA update use."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    scheduler: Any
    ema_text: torch.nn.Module
    ema_unet: torch.nn.Module
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    ema_params: list[torch.nn.Parameter]


@dataclass
class _Data:
    """What the batches are made from: prompt token ids, the noise schedule, and the pre-rendered pool (if any)."""

    token_table: torch.Tensor
    empty_ids: torch.Tensor
    acp: torch.Tensor
    pool: tuple[torch.Tensor, ...] | None
    pool_size: int
    resolution: int
    shape_probs: torch.Tensor | None


@dataclass
class _StepSettings:
    """The per-step hyper-parameters of a training run."""

    batch: int
    lr: float
    steps: int
    warmup: int
    prompt_dropout: float
    camera_dropout: float
    ema_decay: float
    use_bf16: bool = True


def _training_device(device: str) -> torch.device:
    """The torch device for `device` ("auto": CUDA when available, else the CPU)."""
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        ("cpu" if device == "auto" else device))


def _load_init_weights(init_from: str | Path, text_encoder: torch.nn.Module, unet: torch.nn.Module) -> None:
    """Load the UNet and text-encoder weights of the prior folder `init_from` (in fp32)."""
    from safetensors.torch import load_file
    init = Path(init_from)
    unet.load_state_dict({k: v.float() for k, v in load_file(str(init / "unet" /
                          "diffusion_pytorch_model.safetensors")).items()})
    text_encoder.load_state_dict({k: v.float() for k, v in load_file(str(init / "text_encoder" /
                                  "model.safetensors")).items()}, strict=False)


def _build_models(seed: int, lr: float, dev: torch.device, init_from: str | Path | None) -> _Models:
    """Seed torch, build the prior's modules (random or from `init_from`), their EMA copies and the optimizer."""
    torch.manual_seed(seed)
    tokenizer = spm.build_tokenizer()
    text_encoder, unet, scheduler = spm.build_text_encoder(), spm.build_unet(), spm.build_scheduler()
    if init_from is not None:
        _load_init_weights(init_from, text_encoder, unet)
    text_encoder, unet = text_encoder.to(dev), unet.to(dev)
    ema_text, ema_unet = spm.build_text_encoder().to(dev), spm.build_unet().to(dev)
    ema_text.load_state_dict(text_encoder.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    for m in (ema_text, ema_unet):
        m.requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    return _Models(tokenizer, text_encoder, unet, scheduler, ema_text, ema_unet, params, opt, ema_params)


def _resume(state_dir: Path, models: _Models, dev: torch.device, seed: int, batch: int) -> tuple[int, float]:
    """Load the training state saved in `state_dir`, if any; returns (step, seconds trained so far)."""
    if find_checkpoint(state_dir) is None:
        return 0, 0.0
    tensors, meta = load_checkpoint(state_dir, dev)
    for name, m in (("unet", models.unet), ("text", models.text_encoder), ("ema_unet", models.ema_unet),
                    ("ema_text", models.ema_text)):
        load_module_tensors(name, m, tensors)
    load_optimizer_tensors("opt", models.opt, tensors, meta["optimizer"])
    start, elapsed_before = meta["step"], meta.get("seconds", 0.0)
    if meta["seed"] != seed or meta["batch"] != batch:
        raise ValueError(f"{state_dir} was trained with seed={meta['seed']} batch={meta['batch']}; "
                         "use the same values (or a new --out) to resume")
    return start, elapsed_before


def _prepare_data(models: _Models, dev: torch.device, seed: int, resolution: int, pool_size: int | None,
                  shape_probs: torch.Tensor | None) -> _Data:
    """Token tables, the noise schedule on `dev`, and the pool (default: 200k samples on CUDA, none on CPU)."""
    tokenizer = models.tokenizer
    token_table = prompt_token_table(tokenizer).to(dev)
    empty_ids = tokenizer([""], padding="max_length", max_length=spm.MAX_TOKENS, return_tensors="pt").input_ids.to(dev)
    acp = models.scheduler.alphas_cumprod.to(dev)
    if pool_size is None:
        pool_size = 200_000 if dev.type == "cuda" else 0
    pool = _render_pool(pool_size, seed, resolution, dev, shape_probs) if pool_size > 0 else None
    return _Data(token_table, empty_ids, acp, pool, pool_size, resolution, shape_probs)


def _training_info(steps: int, batch: int, seed: int, lr: float, resolution: int, init_from: str | Path | None,
                   shape_weights: dict[str, float] | None, dev: torch.device, pool_size: int) -> dict:
    """The training record written into the exported prior (with the starting prior's own record, if any)."""
    init_training = None  # the starting prior's own record, so a fine-tuned prior keeps its whole history
    if init_from is not None and (Path(init_from) / "dream3d_prior.json").is_file():
        init_training = json.loads((Path(init_from) / "dream3d_prior.json").read_text()).get("training")
    return {"steps": steps, "batch": batch, "seed": seed, "lr": lr, "resolution": resolution,
            "init_from": str(init_from) if init_from else None, "init_training": init_training,
            "shape_weights": shape_weights or None,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "pool_size": pool_size}


def _train_step(models: _Models, data: _Data, settings: _StepSettings, step: int, gen: torch.Generator,
                dev: torch.device) -> torch.Tensor:
    """One optimizer step on a batch drawn from `gen` (data, dropouts, timesteps, noise), then the EMA update;
    returns the loss."""
    batch = settings.batch
    if data.pool is not None:
        idx = torch.randint(data.pool[0].shape[0], (batch,), generator=gen).to(dev)
        x0 = data.pool[0][idx].float() / 127.5 - 1
        si, ci, vi, camf = (p[idx] for p in data.pool[1:])
    else:
        x0, si, ci, vi, camf = make_batch(batch, gen, data.resolution, dev, data.shape_probs)
    si, ci, vi, camf = si.to(dev), ci.to(dev), vi.to(dev), camf.to(dev)
    ids = data.token_table[si, ci, vi]
    drop_text = (torch.rand(batch, generator=gen) < settings.prompt_dropout).to(dev)
    drop_cam = (torch.rand(batch, generator=gen) < settings.camera_dropout).to(dev)
    ids = torch.where(drop_text[:, None], data.empty_ids.expand(batch, -1), ids)
    camf = torch.where(drop_cam[:, None], torch.zeros_like(camf), camf)
    t = torch.randint(0, models.scheduler.config.num_train_timesteps, (batch,), generator=gen).to(dev)
    noise = torch.randn(x0.shape, generator=gen).to(dev)
    a = data.acp[t].sqrt()[:, None, None, None]
    s = (1 - data.acp[t]).sqrt()[:, None, None, None]
    xt = a * x0 + s * noise
    for g in models.opt.param_groups:
        g["lr"] = _lr_at(step, settings.lr, settings.steps, settings.warmup)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=settings.use_bf16):
        emb = models.text_encoder(ids)[0]
        pred = models.unet(xt, t, emb, class_labels=camf).sample
    loss = F.mse_loss(pred.float(), noise)
    models.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(models.params, 1.0)
    models.opt.step()
    decay = min(settings.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(models.ema_params, models.params, 1 - decay)
    return loss


def _save(out: Path, models: _Models, info: dict, step: int, seconds: float, seed: int, batch: int,
          recommended_cfg: float) -> None:
    """Checkpoint the training state atomically to `out/train_state` and export the EMA weights as a prior."""
    t_unet, t_text = module_tensors("unet", models.unet), module_tensors("text", models.text_encoder)
    o_t, o_meta = optimizer_tensors("opt", models.opt)
    tensors = {**t_unet, **t_text, **module_tensors("ema_unet", models.ema_unet),
               **module_tensors("ema_text", models.ema_text), **o_t}
    save_checkpoint(out / "train_state", tensors, {"step": step, "seed": seed, "batch": batch, "seconds": seconds,
                                                   "optimizer": o_meta})
    export_prior(out, models.tokenizer, models.ema_text, models.ema_unet, models.scheduler,
                 {**info, "trained_steps": step, "train_seconds": round(seconds, 1),
                  "recommended_cfg": recommended_cfg})


def train_shapes_prior(out: str | Path, steps: int = 20000, resolution: int = spm.RESOLUTION, batch: int = 64,
                       seed: int = 0, lr: float = 3e-4, device: str = "auto", checkpoint_every: int = 1000,
                       pool_size: int | None = None, prompt_dropout: float = 0.1, camera_dropout: float = 0.1,
                       ema_decay: float = 0.999, max_minutes: float | None = None, recommended_cfg: float = 3.0,
                       init_from: str | Path | None = None, warmup: int = 500,
                       shape_weights: dict[str, float] | None = None, progress: bool = True) -> Path:
    """Train (or resume training of) the shapes prior into the folder `out`; returns `out`.

    pool_size: number of pre-rendered samples to draw batches from (default: 200k on CUDA, on-the-fly on CPU).
    max_minutes: stop early (with a checkpoint and an exported prior) after this wall time.
    init_from: start from the weights of an existing prior folder (fine-tuning) instead of a random init.
    shape_weights: relative sampling weight per shape, e.g. {"wedge": 3} to show the hardest shape more often.
    """
    shape_probs = shape_probabilities(shape_weights)
    out = Path(out)
    dev = _training_device(device)
    models = _build_models(seed, lr, dev, init_from)
    start, elapsed_before = _resume(out / "train_state", models, dev, seed, batch)
    data = _prepare_data(models, dev, seed, resolution, pool_size, shape_probs)
    info = _training_info(steps, batch, seed, lr, resolution, init_from, shape_weights, dev, data.pool_size)
    settings = _StepSettings(batch, lr, steps, warmup, prompt_dropout, camera_dropout, ema_decay)

    t0 = time.time()
    bar = tqdm(total=steps, initial=start, desc="prior train", disable=not progress, dynamic_ncols=True)
    step = start
    loss_ema = None
    while step < steps:
        loss = _train_step(models, data, settings, step, _step_generator(seed, step), dev)
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.4f}")
        seconds = elapsed_before + time.time() - t0
        timed_out = max_minutes is not None and (time.time() - t0) > 60 * max_minutes
        if step % checkpoint_every == 0 or step == steps or timed_out:
            _save(out, models, info, step, seconds, seed, batch, recommended_cfg)
        if timed_out:
            break
    bar.close()
    return out


def export_prior(out: Path, tokenizer, text_encoder, unet, scheduler, info: dict) -> None:
    """Write the EMA weights as a diffusers-layout folder in fp16 (the shipped form)."""
    te = spm.build_text_encoder()
    te.load_state_dict({k: v.detach().cpu() for k, v in text_encoder.state_dict().items()})
    un = spm.build_unet()
    un.load_state_dict({k: v.detach().cpu() for k, v in unet.state_dict().items()})
    meta = {"resolution": info["resolution"], "strict_vocabulary": True, "camera_condition": "dream3d.cameras.camera_features",
            "recommended_cfg": info["recommended_cfg"], "training": info}
    spm.save_prior_folder(out, tokenizer, te.half(), un.half(), scheduler, meta)
