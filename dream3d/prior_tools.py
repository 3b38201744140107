"""`dream3d prior sample` and `dream3d prior eval`: look at and score a prior in the shapes world."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dream3d.cameras import make_cameras, sample_cameras, view_suffixes
from dream3d.guidance.sampling import sample_images
from dream3d.priors import load_prior
from dream3d.shapes.metrics import classify_color, classify_shape
from dream3d.shapes.primitives import COLORS, SHAPES
from dream3d.shapes.prompts import make_prompt


def default_cfg(prior) -> float:
    return float(prior.recommended_cfg or 3.0)


def save_grid(rgb: torch.Tensor, path: str | Path, columns: int = 8, scale: int = 2) -> None:
    """Write images (B,3,H,W) in [0,1] as one PNG grid (nearest-neighbour upscaled by `scale`)."""
    b, _, h, w = rgb.shape
    rows = (b + columns - 1) // columns
    canvas = np.ones((rows * h, columns * w, 3), dtype=np.float32)
    for i, img in enumerate(rgb.permute(0, 2, 3, 1).numpy()):
        r, c = divmod(i, columns)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    im = Image.fromarray((canvas * 255).round().astype(np.uint8))
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(path)


def prior_sample(prompt: str, out: str | Path, n: int = 8, steps: int = 50, cfg: float | None = None,
                 prior_name: str | None = None, seed: int = 0, device: str = "cpu",
                 elevation: float = 20.0) -> Path:
    """Sample n images of `prompt` from n azimuths around the object (view words and camera given to the prior)."""
    prior = load_prior(prior_name, device=device)
    cams = make_cameras(torch.full((n,), elevation), torch.arange(n) * (360.0 / n))
    prompts = [prompt + s for s in view_suffixes(cams)]
    for p in dict.fromkeys(prompts):  # one line naming the prior's token limit, before any sampling
        prior.check_prompt(p)
    rgb = sample_images(prior, prompts, cams, steps=steps, guidance_scale=cfg if cfg is not None else default_cfg(prior),
                        seed=seed)
    save_grid(rgb, out, columns=min(n, 8))
    return Path(out)


def prior_eval(prior_name: str | None = None, n: int = 8, steps: int = 50, cfg: float | None = None,
               seed: int = 0, device: str = "cpu", json_path: str | Path | None = None,
               grid_path: str | Path | None = None, progress: bool = True) -> dict:
    """Sample n images for every (shape, color) prompt from random cameras and score color and shape accuracy.

    Returns {"color_accuracy", "shape_accuracy", "cfg", "steps", "n", "seconds", "rows": [per-prompt rows]}.
    """
    prior = load_prior(prior_name, device=device)
    scale = cfg if cfg is not None else default_cfg(prior)
    pairs = [(s, c) for s in SHAPES for c in COLORS]
    gen = torch.Generator().manual_seed(seed)
    cams = sample_cameras(n * len(pairs), generator=gen)
    prompts = [make_prompt(c, s) + suffix for (s, c), suffix in
               zip([p for p in pairs for _ in range(n)], view_suffixes(cams))]
    t0 = time.time()
    chunk = 96
    bar = tqdm(total=steps * ((len(prompts) + chunk - 1) // chunk), desc="prior eval", disable=not progress)
    rgb = sample_images(prior, prompts, cams, steps=steps, guidance_scale=scale, seed=seed, chunk=chunk,
                        progress=bar.update)
    bar.close()
    seconds = time.time() - t0
    colors = classify_color(rgb)
    shapes, _ = classify_shape(rgb, cams)
    rows = []
    for k, (s, c) in enumerate(pairs):
        sl = slice(k * n, (k + 1) * n)
        rows.append({"prompt": make_prompt(c, s), "shape": s, "color": c,
                     "color_accuracy": float(np.mean([x == c for x in colors[sl]])),
                     "shape_accuracy": float(np.mean([x == s for x in shapes[sl]])),
                     "predicted_shapes": shapes[sl], "predicted_colors": colors[sl]})
    result = {"prior": str(prior.name), "cfg": scale, "steps": steps, "n": n, "seed": seed,
              "color_accuracy": float(np.mean([r["color_accuracy"] for r in rows])),
              "shape_accuracy": float(np.mean([r["shape_accuracy"] for r in rows])),
              "seconds": round(seconds, 1), "images_per_second": round(len(prompts) / seconds, 2), "rows": rows}
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    if grid_path:
        save_grid(rgb, grid_path, columns=n * 2 if n <= 6 else n)
    return result


def format_eval_table(result: dict) -> str:
    """Per-shape x per-color table of (color acc, shape acc) plus the totals."""
    lines = [f"{'shape':10s} " + " ".join(f"{c:>9s}" for c in COLORS) + "   (color/shape accuracy)"]
    by = {(r["shape"], r["color"]): r for r in result["rows"]}
    for s in SHAPES:
        cells = [f"{by[s, c]['color_accuracy']:.2f}/{by[s, c]['shape_accuracy']:.2f}" for c in COLORS]
        lines.append(f"{s:10s} " + " ".join(f"{x:>9s}" for x in cells))
    lines.append(f"color_accuracy {result['color_accuracy']:.3f}  shape_accuracy {result['shape_accuracy']:.3f}  "
                 f"(cfg {result['cfg']}, DDIM {result['steps']} steps, {result['n']} samples/prompt, "
                 f"{result['seconds']} s, {result['images_per_second']} img/s)")
    return "\n".join(lines)
