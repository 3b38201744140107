"""Turntable videos: render a full orbit with a caller's render function, write MP4 (H.264) and GIF.

The render function is the NeRF's (or anything's): `render_fn(cams: Cameras) -> rgb (B,3,H,W) in [0,1]`, called
on batches of `dream3d.cameras.orbit_cameras(n_frames, elevation_deg)` in orbit order (azimuth 0 = front, then
towards +x). Nothing here knows about geometry or priors.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dream3d.cameras import Cameras, orbit_cameras
from dream3d.errors import Dream3DError
from dream3d.fileio import atomic_target


def render_orbit(render_fn: Callable[[Cameras], torch.Tensor], n_frames: int = 60, elevation_deg: float = 20.0,
                 batch_size: int = 4, **orbit_kwargs) -> np.ndarray:
    """Frames (n_frames, H, W, 3) uint8 of an orbit rendered batch by batch under `torch.no_grad()`.

    orbit_kwargs go to `orbit_cameras` (distance, fov_deg, start_azimuth_deg).
    """
    if n_frames < 1:
        raise Dream3DError(f"a turntable needs at least one frame, got {n_frames}")
    cams = orbit_cameras(n_frames, elevation_deg, **orbit_kwargs)
    frames = []
    with torch.no_grad():
        for start in range(0, n_frames, batch_size):
            rgb = render_fn(cams[start:start + batch_size])
            if rgb.ndim != 4 or rgb.shape[1] != 3:
                raise Dream3DError(f"the turntable render function must return (B,3,H,W) images, got "
                                   f"{tuple(rgb.shape)}")
            img = (rgb.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
            frames.append(img.permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(frames, 0)


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad frames (N,H,W,3) by edge replication to even H and W (H.264 with yuv420p needs even sizes)."""
    ph, pw = frames.shape[1] % 2, frames.shape[2] % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = 30) -> Path:
    """H.264 MP4 (yuv420p, plays everywhere) of frames (N,H,W,3) uint8 via imageio-ffmpeg."""
    import imageio.v2 as imageio

    path = Path(path)
    with atomic_target(path) as tmp:
        try:
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                    macro_block_size=2, quality=8) as writer:
                for frame in _even(frames):
                    writer.append_data(frame)
        except (OSError, RuntimeError, ValueError) as e:  # ffmpeg dying (a full disk) is not always an OSError
            if isinstance(e, OSError) and e.errno is not None:
                raise
            raise OSError(_disk_errno(tmp.parent), f"ffmpeg could not write the video ({type(e).__name__})") from None
    return path


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: int = 30) -> Path:
    """Looping GIF of frames (N,H,W,3) uint8 (Pillow's palette quantization)."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(f) for f in frames]
    with atomic_target(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=max(20, int(round(1000.0 / fps))), optimize=False)
    return path


def _disk_errno(folder: Path) -> int:
    """ENOSPC when `folder`'s file system has (almost) no space left, else EIO: why a writer child process died."""
    try:
        return errno.ENOSPC if shutil.disk_usage(folder).free < 1 << 20 else errno.EIO
    except OSError:
        return errno.EIO


def write_turntable(render_fn: Callable[[Cameras], torch.Tensor], path_mp4: str | os.PathLike | None,
                    path_gif: str | os.PathLike | None = None, n_frames: int = 60, *, elevation_deg: float = 20.0,
                    fps: int = 30, batch_size: int = 4, **orbit_kwargs) -> dict[str, Path]:
    """Render a full orbit of `n_frames` and write it as MP4 and/or GIF (either path may be None).

    Returns {"mp4": path, "gif": path} for the files written.
    """
    frames = render_orbit(render_fn, n_frames, elevation_deg, batch_size, **orbit_kwargs)
    out: dict[str, Path] = {}
    if path_mp4 is not None:
        Path(path_mp4).parent.mkdir(parents=True, exist_ok=True)
        out["mp4"] = write_mp4(path_mp4, frames, fps)
    if path_gif is not None:
        Path(path_gif).parent.mkdir(parents=True, exist_ok=True)
        out["gif"] = write_gif(path_gif, frames, fps)
    return out
