"""`python app.py [--host] [--port] [--auth USER:PASS] [--share] [--outputs DIR] ...`: launch the web app.

Safe defaults: binds 127.0.0.1; binding another address or `--share` requires `--auth`; no `allowed_paths`
(run files are served one by one as the app returns them); Gradio's monitoring endpoint and analytics are off.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

from dream3d.errors import Dream3DError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'USER:PASS' -> (user, password); Dream3DError when malformed."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise Dream3DError("--auth takes USER:PASS (both non-empty)")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="dream3d web app (Gradio)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --auth)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    p.add_argument("--auth", metavar="USER:PASS", help="require this login (required to bind beyond localhost)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs --auth)")
    p.add_argument("--outputs", default="outputs", help="runs folder (default: outputs)")
    p.add_argument("--runs-per-device", type=int, default=1, help="concurrent runs per device (default 1)")
    p.add_argument("--max-queue", type=int, default=8, help="runs that may wait in line (default 8)")
    p.add_argument("--preview-seconds", type=float, default=3.0,
                   help="render a preview when this many seconds passed since the last (0: only preview_every)")
    return p


def check_exposure(host: str, share: bool, auth: tuple[str, str] | None) -> None:
    """Refuse to serve beyond this machine without a login."""
    if (host not in LOCAL_HOSTS or share) and auth is None:
        where = "a public share link" if share else f"address {host}"
        raise Dream3DError(f"serving on {where} needs a login: add --auth USER:PASS (or bind 127.0.0.1)")


def create(outputs: str | Path = "outputs", runs_per_device: int = 1, max_queue: int = 8,
           preview_seconds: float = 3.0, poll_seconds: float = 0.5):
    """The queued Blocks and its run manager, ready for `launch_kwargs`."""
    from dream3d.app.jobs import RunManager
    from dream3d.app.ui import build_app
    from dream3d.app.worker import run_job

    manager = RunManager(functools.partial(run_job, preview_seconds=preview_seconds), runs_per_device, max_queue)
    demo = build_app(outputs, manager, poll_seconds=poll_seconds)
    demo.queue(max_size=4 * max_queue + 32)  # page events; the run manager bounds the runs themselves
    return demo


def launch_kwargs(host: str = "127.0.0.1", port: int | None = 7860, auth: tuple[str, str] | None = None,
                  share: bool = False) -> dict:
    """Keyword arguments of `Blocks.launch` with the safe settings."""
    check_exposure(host, share, auth)
    from dream3d.app.ui import CSS

    return dict(server_name=host, server_port=port, auth=auth, share=share, enable_monitoring=False,
                allowed_paths=None, show_error=False, ssr_mode=False, css=CSS, footer_links=["api"], quiet=True)


def launch_hint(local_url: str, share_url: str | None = None, share: bool = False) -> str:
    """What the app prints once it serves: its address, and how to get a public link with this app's options
    (Gradio's own hint names `launch(share=True)`, which an app.py user cannot pass)."""
    lines = [f"app.py: serving on {local_url} (Ctrl-C stops it; running jobs keep a checkpoint and an export)"]
    if share_url:
        lines.append(f"app.py: public link {share_url}")
    elif share:
        lines.append("app.py: the public link could not be created (no connection to gradio.live?)")
    else:
        lines.append("app.py: for a public link, start it with --share --auth USER:PASS")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from dream3d.console import quiet_libraries

    a = build_parser().parse_args(argv)
    try:
        auth = parse_auth(a.auth)
        check_exposure(a.host, a.share, auth)
        if importlib.util.find_spec("gradio") is None:
            raise Dream3DError("the web app needs gradio: pip install -e '.[app]'")
        kwargs = launch_kwargs(a.host, a.port, auth, a.share)
        quiet_libraries()
        demo = create(a.outputs, a.runs_per_device, a.max_queue, a.preview_seconds)
    except Dream3DError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # like Ctrl-C: running jobs stop with a checkpoint and an export
    try:
        demo.launch(prevent_thread_lock=True, **kwargs)
        print(launch_hint(demo.local_url, demo.share_url, a.share), file=sys.stderr, flush=True)
        while True:  # our own wait, so that runs are stopped before the server waits for their pages
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("app.py: stopping runs (each keeps its checkpoint and an export)...", file=sys.stderr)
        demo.run_manager.shutdown()
        demo.close()
    return 0
