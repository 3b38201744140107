"""Frozen diffusion priors (SD-style latent, IF-style pixel, the bundled shapes prior) behind one interface.

diffusers/transformers are imported only when a prior is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dream3d.errors import ModelLoadError
from dream3d.priors.kinds import BUNDLED_PRIOR_DIR, is_bundled
from dream3d.priors.memory import MemoryOptions
from dream3d.priors.prior import Prior


def load_prior(name_or_path: str | Path | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, memory: MemoryOptions | None = None) -> Prior:
    """Load a prior: a diffusers folder, a hub id, or None / "bundled" for the bundled shapes prior
    (`dream3d/assets/shapes_prior/`). Raises ModelLoadError with one line when it cannot be loaded."""
    if is_bundled(name_or_path):
        if not (BUNDLED_PRIOR_DIR / "model_index.json").is_file():
            raise ModelLoadError(f"the bundled shapes prior is missing (expected at {BUNDLED_PRIOR_DIR}); "
                                 "train it with `dream3d prior train` or pass a prior folder or hub id")
        name_or_path = BUNDLED_PRIOR_DIR
    return Prior.from_pretrained(name_or_path, device=device, dtype=dtype, memory=memory)


__all__ = ["BUNDLED_PRIOR_DIR", "Prior", "load_prior"]
