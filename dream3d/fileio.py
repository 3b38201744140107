"""Small file helpers every layer may use: atomic JSON writes, reading user files with one-line errors, safe
folder names, PNG strips."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dream3d.errors import Dream3DError, safe_text

def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path`; a Dream3DError naming the file when it is missing, unreadable or not UTF-8."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise Dream3DError(f"{safe_text(path)}: the {what} is not UTF-8 text (byte {e.start})") from None
    except IsADirectoryError:
        raise Dream3DError(f"{safe_text(path)}: the {what} is a folder, not a file") from None
    except FileNotFoundError:
        raise Dream3DError(f"{safe_text(path)}: the {what} does not exist") from None
    except OSError as e:
        raise Dream3DError(f"{safe_text(path)}: cannot read the {what} ({e.strerror or type(e).__name__})") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON of `path`; a Dream3DError naming the file when it is missing, unreadable, not UTF-8 or not JSON."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as e:
        raise Dream3DError(f"{safe_text(path)}: the {what} is not valid JSON ({getattr(e, 'msg', e)})") from None


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
