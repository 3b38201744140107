"""Small file helpers every layer may use: atomic writes, reading user files with one-line errors, safe
folder names, PNG strips."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write (`.<stem>.<pid>.tmp<suffix>`, so writers that go by the suffix
    still do), renamed onto `path` when the block ends. When the block fails the temporary file is removed (a full
    disk leaves neither half a file nor a stray `*.tmp`) and an OSError names `path`, not the temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through `atomic_target` (readers never see half a file)."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` through `atomic_target` (readers never see half a file)."""
    write_bytes_atomic(path, json.dumps(data, indent=1).encode("utf-8"))


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
