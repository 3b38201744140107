"""The Gradio web app (`python app.py`): generate, watch, stop, view, download, edit, reopen past runs.

Gradio is imported only when the UI is built (`build_app`, `create`, `main`); the run manager
(`dream3d.app.jobs`) works without it.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Parse `app.py` arguments and serve the app (blocks until interrupted)."""
    from dream3d.app.launch import main as _main
    return _main(argv)


def create(*args, **kwargs):
    """The queued Blocks and its run manager (see `dream3d.app.launch.create`)."""
    from dream3d.app.launch import create as _create
    return _create(*args, **kwargs)
