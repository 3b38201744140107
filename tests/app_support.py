"""Shared pieces of the web-app tests: a tiny run configuration, dependency checks, launching the app."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]
# screenshots of the browser tests: $DREAM3D_TEST_ARTIFACTS, else a folder in the temp folder (never outputs/)
ARTIFACTS = Path(os.environ.get("DREAM3D_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "dream3d-test-artifacts")

# everything a generation does, at a size that runs in seconds on a CPU (flow style: one line per section)
TINY_YAML = """\
device: cpu
preview_every: 10
checkpoint_every: 1000
geometry: {n_levels: 4, log2_hashmap_size: 12, mlp_width: 16}
render: {height: 16, width: 16, batch_size: 1, samples_per_ray: 24, shading_warmup_steps: 2}
export: {resolution: 48, texture_size: 128, turntable_frames: 4, turntable_resolution: 32}
"""


def need_gradio() -> None:
    for mod in ("gradio", "gradio_client", "pandas"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (pip install -e '.[app]')")


def need_browser() -> None:
    need_gradio()
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(outputs: Path, auth=None, **create_kwargs):
    """(demo, url): the app served on 127.0.0.1 from this process (`prevent_thread_lock`); auth: its accounts
    ({user: password}; default no login)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from dream3d.app.launch import create, launch_kwargs

    demo = create(outputs, **create_kwargs)
    port = free_port()
    demo.launch(prevent_thread_lock=True, **launch_kwargs("127.0.0.1", port, auth))
    return demo, f"http://127.0.0.1:{port}/"


def close_app(demo) -> None:
    demo.run_manager.shutdown()
    demo.close()
    demo.file_server.close()


def wait_for(cond, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `cond` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def run_status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def check_glb(path: Path) -> int:
    """Assert `path` is a binary glTF that trimesh loads with a non-empty mesh; returns its face count."""
    import trimesh

    data = Path(path).read_bytes()
    assert data[:4] == b"glTF", data[:4]
    assert int.from_bytes(data[8:12], "little") == len(data)  # header length field = file size
    scene = trimesh.load(str(path), file_type="glb", force="scene")
    faces = sum(len(g.faces) for g in scene.geometry.values())
    assert faces > 100, faces
    return faces
