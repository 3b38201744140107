"""Small file helpers every layer may use: atomic JSON writes, safe folder names, PNG strips."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` through a temporary sibling and a rename (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def slugify(text: str, max_len: int = 40) -> str:
    """A safe folder-name fragment: lowercase letters, digits and '-', bounded length, never empty.

    >>> slugify("A red cube / ../etc")
    'a-red-cube-etc'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "run"


def save_image(rgb, path: Path) -> None:
    """rgb: (B,3,H,W) tensor in [0,1] -> one PNG at `path`, the B images side by side."""
    import numpy as np
    from PIL import Image

    arr = rgb.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    Image.fromarray((np.concatenate(list(arr), axis=1) * 255).round().astype(np.uint8)).save(path)
