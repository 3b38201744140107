"""The README's sample grid of the shapes prior: one row per shape, 8 azimuths around it.

Each row is `dream3d prior sample` of "a <color> <shape>" (DDIM, the prior's recommended guidance scale unless
--cfg is given, elevation 20 degrees, azimuths 0, 45, ..., 315; the view words and the exact camera go to the
prior), with a different color per row.
Usage: python benchmarks/prior_figure.py --out docs/prior_samples.png [--prior PATH] [--steps 50] [--cfg C]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dream3d.prior_tools import prior_sample
from dream3d.shapes.primitives import COLORS, SHAPES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--prior", default=None)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    colors = list(COLORS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, shape in enumerate(SHAPES):
            prompt = f"a {colors[i % len(colors)]} {shape}"
            path = prior_sample(prompt, Path(tmp) / f"{shape}.png", n=8, steps=a.steps, cfg=a.cfg,
                                prior_name=a.prior, seed=a.seed)
            rows.append(np.asarray(Image.open(path).convert("RGB")))
            print(prompt, "done", flush=True)
    Image.fromarray(np.concatenate(rows, 0)).save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
