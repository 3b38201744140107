"""`python app.py [--host] [--port] [--auth-file FILE] [--share] [--outputs DIR] [--allow-prior ID] ...`: launch
the web app.

Safe defaults: binds 127.0.0.1; binding another address or `--share` requires a login (`--auth-file FILE`, the
`DREAM3D_APP_AUTH` environment variable, or `--auth USER:PASS`, which other local users can read in `ps`); the
page offers the bundled prior only unless the operator adds priors (`--allow-prior`), and its runs stay within the
page limits (`--max-steps`, `--limit KEY=MAX`: `dream3d.app.policy`); no upload route, request bodies capped,
repeated wrong logins delayed (`dream3d.app.guards`); no `allowed_paths` (run files are served one by one as the
app returns them); Gradio's monitoring endpoint and analytics are off. Every option is checked before anything
starts (port range, port free, outputs folder writable), each mistake one line with exit status 2.

SIGTERM or Ctrl-C stops every run after its current step; each keeps its checkpoint and writes an export, for at
most `--shutdown-seconds`; then the app exits 0 (1 when a run was still busy at the bound). A second signal exits
at once.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import signal
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

from dream3d.errors import Dream3DError, safe_text

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
AUTH_ENV = "DREAM3D_APP_AUTH"  # USER:PASS, read when neither --auth nor --auth-file is given
SHUTDOWN_SECONDS = 600.0  # how long a stop waits for the runs' checkpoints and exports
MAX_UPLOAD = "1mb"  # Gradio's cap on files in the requests it parses (the upload route itself is refused)


def parse_auth(text: str | None, source: str = "--auth") -> tuple[str, str] | None:
    """'USER:PASS' -> (user, password); Dream3DError when malformed."""
    if text is None:
        return None
    user, sep, password = text.strip("\r\n").partition(":")
    if not sep or not user or not password:
        raise Dream3DError(f"{source} takes USER:PASS (both non-empty)")
    return user, password


def read_auth_file(path: str | Path) -> dict[str, str]:
    """The accounts of an auth file: one USER:PASS a line (blank lines and # comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Dream3DError(f"--auth-file {safe_text(path)}: cannot read it "
                           f"({getattr(e, 'strerror', None) or type(e).__name__})") from None
    accounts = dict(parse_auth(line, f"--auth-file {safe_text(path)} line {i}") for i, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#"))
    if not accounts:
        raise Dream3DError(f"--auth-file {safe_text(path)} holds no USER:PASS line")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"app.py: warning: {safe_text(path)} is readable by other users; chmod 600 it", file=sys.stderr)
    return accounts


def credentials(auth: str | None, auth_file: str | None, environ=os.environ) -> dict[str, str] | None:
    """The login accounts: --auth-file, else --auth, else $DREAM3D_APP_AUTH; None for no login."""
    if auth and auth_file:
        raise Dream3DError("give --auth or --auth-file, not both")
    if auth_file:
        return read_auth_file(auth_file)
    pair = parse_auth(auth) or parse_auth(environ.get(AUTH_ENV) or None, f"${AUTH_ENV}")
    return dict([pair]) if pair else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="dream3d web app (Gradio)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a login)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on, 1-65535 (default 7860)")
    p.add_argument("--auth-file", metavar="FILE", help="require a login: one USER:PASS a line (also "
                   f"${AUTH_ENV}=USER:PASS); required to bind beyond localhost")
    p.add_argument("--auth", metavar="USER:PASS", help="require this login (visible to local users in ps: prefer "
                   "--auth-file)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs a login)")
    p.add_argument("--outputs", default="outputs", help="runs folder (default: outputs)")
    p.add_argument("--allow-prior", action="append", default=[], metavar="ID_OR_PATH",
                   help="offer this prior (hub id or local diffusers folder) on the page; repeatable "
                   "(default: the bundled prior only)")
    p.add_argument("--max-steps", type=int, metavar="N", help="most steps of each stage of a run from the page "
                   "(default 25000)")
    p.add_argument("--limit", action="append", default=[], metavar="KEY=MAX",
                   help="upper limit of a numeric config key for the page, e.g. render.height=256; repeatable "
                   "(defaults: README, Web app)")
    p.add_argument("--runs-per-device", type=int, default=1, help="concurrent runs per device (default 1)")
    p.add_argument("--max-queue", type=int, default=8, help="runs that may wait in line (default 8)")
    p.add_argument("--preview-seconds", type=float, default=3.0,
                   help="render a preview when this many seconds passed since the last (0: only preview_every)")
    p.add_argument("--shutdown-seconds", type=float, default=SHUTDOWN_SECONDS,
                   help="on SIGTERM/Ctrl-C, how long to wait for the runs' checkpoints and exports (default 600)")
    return p


def check_exposure(host: str, share: bool, auth) -> None:
    """Refuse to serve beyond this machine without a login."""
    if (host not in LOCAL_HOSTS or share) and not auth:
        where = "a public share link" if share else f"address {safe_text(host)}"
        raise Dream3DError(f"serving on {where} needs a login: add --auth-file FILE (or --auth USER:PASS), or bind "
                           "127.0.0.1")


def check_port(host: str, port: int) -> None:
    """Dream3DError unless `port` is in 1..65535 and nothing serves on it at `host`."""
    if not 1 <= port <= 65535:
        raise Dream3DError(f"--port must be in 1..65535; got {port}")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise Dream3DError(f"--host {safe_text(host)}: not an address of this machine "
                           f"({getattr(e, 'strerror', None) or e})") from None
    errors = []
    for family, kind, proto, _, address in addresses:  # e.g. localhost: ::1 and 127.0.0.1; one must be free
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT is free
            try:
                s.bind(address)
                return
            except OSError as e:
                errors.append(e.strerror)
    raise Dream3DError(f"cannot serve on {safe_text(host)} port {port} ({errors[0]}); is another app serving "
                       "there? Choose another --port")


def check_outputs(outputs: str | Path) -> None:
    """Dream3DError unless the runs folder exists (or can be made) and takes new files."""
    path = Path(outputs)
    if path.exists() and not path.is_dir():
        raise Dream3DError(f"--outputs {safe_text(path)} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".dream3d-write-test-"):
            pass
    except OSError as e:
        raise Dream3DError(f"--outputs {safe_text(path)}: cannot write there ({e.strerror or type(e).__name__})") \
            from None


def check_options(a: argparse.Namespace) -> None:
    """The numeric options and the offered priors, before anything starts."""
    if a.runs_per_device < 1:
        raise Dream3DError(f"--runs-per-device must be at least 1; got {a.runs_per_device}")
    if a.max_queue < 1:
        raise Dream3DError(f"--max-queue must be at least 1 (a run waits in line before it starts); got "
                           f"{a.max_queue}")
    for name in ("preview_seconds", "shutdown_seconds"):
        value = getattr(a, name)
        if not 0 <= value < float("inf"):
            raise Dream3DError(f"--{name.replace('_', '-')} must be a number of seconds, 0 or more; got {value}")
    for prior in a.allow_prior:
        if not prior.strip():
            raise Dream3DError("--allow-prior takes a hub id or a local diffusers folder; got an empty one")
        if prior.startswith(("/", ".", "~")) and not Path(prior).expanduser().is_dir():
            raise Dream3DError(f"--allow-prior {safe_text(prior)}: no such folder")


def create(outputs: str | Path = "outputs", runs_per_device: int = 1, max_queue: int = 8,
           preview_seconds: float = 3.0, poll_seconds: float = 0.5, allowed_priors: tuple[str, ...] = (),
           limits: dict[str, float] | None = None):
    """The queued Blocks and its run manager, ready for `launch_kwargs`. allowed_priors, limits: the page policy
    (`dream3d.app.policy`; default: the bundled prior only, PAGE_LIMITS)."""
    from dream3d.app.jobs import RunManager
    from dream3d.app.policy import PAGE_LIMITS, PagePolicy
    from dream3d.app.ui import build_app
    from dream3d.app.worker import run_job

    manager = RunManager(functools.partial(run_job, preview_seconds=preview_seconds), runs_per_device, max_queue)
    policy = PagePolicy(tuple(allowed_priors), dict(limits or PAGE_LIMITS))
    demo = build_app(outputs, manager, poll_seconds=poll_seconds, policy=policy)
    demo.queue(max_size=4 * max_queue + 32)  # page events; the run manager bounds the runs themselves
    return demo


def launch_kwargs(host: str = "127.0.0.1", port: int | None = 7860, auth=None, share: bool = False) -> dict:
    """Keyword arguments of `Blocks.launch` with the safe settings. auth: None, (user, password), {user:
    password} or a `LoginGuard`; accounts are checked by a LoginGuard (delays after repeated failures), whose
    `check` becomes the launch's `auth`."""
    check_exposure(host, share, auth)
    from starlette.middleware import Middleware

    from dream3d.app.guards import LoginGuard, RequestGuard
    from dream3d.app.ui import CSS

    if isinstance(auth, tuple):
        auth = dict([auth])
    if isinstance(auth, dict):
        auth = LoginGuard(auth)
    return dict(server_name=host, server_port=port, auth=auth.check if auth is not None else None, share=share,
                enable_monitoring=False, allowed_paths=None, show_error=False, ssr_mode=False, css=CSS,
                footer_links=["api"], quiet=True, max_file_size=MAX_UPLOAD,
                app_kwargs={"middleware": [Middleware(RequestGuard)]})


def launch_hint(local_url: str, share_url: str | None = None, share: bool = False) -> str:
    """What the app prints once it serves: its address, and how to get a public link with this app's options
    (Gradio's own hint names `launch(share=True)`, which an app.py user cannot pass)."""
    lines = [f"app.py: serving on {local_url} (Ctrl-C stops it; running jobs keep a checkpoint and an export)"]
    if share_url:
        lines.append(f"app.py: public link {share_url}")
    elif share:
        lines.append("app.py: the public link could not be created (no connection to gradio.live?)")
    else:
        lines.append("app.py: for a public link, start it with --share --auth-file FILE (or --share --auth "
                     "USER:PASS)")
    return "\n".join(lines)


def _exit_now(signum, frame) -> None:
    print("app.py: second signal: exiting now; runs keep their last checkpoint, an export under way is lost",
          file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _first_signal(signum, frame) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_now)
    raise KeyboardInterrupt


def stop_app(demo, timeout: float) -> bool:
    """Stop every run (after its current step: checkpoint, then export), waiting at most `timeout` s; then close
    the server and remove the files staged for the page. False when a run was still busy at the bound."""
    print(f"app.py: stopping runs: each stops after its current step and keeps its checkpoint and an export "
          f"(waiting at most {timeout:g} s; a second Ctrl-C exits at once)...", file=sys.stderr, flush=True)
    busy = demo.run_manager.shutdown(timeout=timeout)
    for job in busy:
        print(f"app.py: run {job.run_dir.name} was still {job.state} after {timeout:g} s; its last checkpoint is "
              "kept", file=sys.stderr, flush=True)
    if busy:
        return False
    demo.close()
    demo.file_server.close()
    return True


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from dream3d.console import quiet_libraries

    a = build_parser().parse_args(argv)
    try:
        auth = credentials(a.auth, a.auth_file)
        check_exposure(a.host, a.share, auth)
        check_options(a)
        check_port(a.host, a.port)
        check_outputs(a.outputs)
        from dream3d.app.policy import page_limits
        limits = page_limits(a.max_steps, a.limit)
        if importlib.util.find_spec("gradio") is None:
            raise Dream3DError("the web app needs gradio: pip install -e '.[app]'")
        if a.auth:
            print("app.py: warning: --auth USER:PASS is visible to other local users (ps); prefer --auth-file FILE "
                  f"or ${AUTH_ENV}", file=sys.stderr)
        kwargs = launch_kwargs(a.host, a.port, auth, a.share)
        quiet_libraries()
        demo = create(a.outputs, a.runs_per_device, a.max_queue, a.preview_seconds, allowed_priors=a.allow_prior,
                      limits=limits)
    except Dream3DError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2

    for sig in (signal.SIGTERM, signal.SIGINT):  # like Ctrl-C: running jobs stop with a checkpoint and an export
        signal.signal(sig, _first_signal)
    try:
        try:
            demo.launch(prevent_thread_lock=True, **kwargs)
        except OSError as e:  # the port was taken between the check and the launch
            print(f"app.py: error: cannot serve on {safe_text(a.host)} port {a.port} ({safe_text(e, 120)})",
                  file=sys.stderr)
            demo.run_manager.shutdown(timeout=0)
            return 2
        print(launch_hint(demo.local_url, demo.share_url, a.share), file=sys.stderr, flush=True)
        while True:  # our own wait, so that runs are stopped before the server waits for their pages
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    if not stop_app(demo, a.shutdown_seconds):
        sys.stderr.flush()
        os._exit(1)  # a worker thread is still inside the export: leave without unwinding it
    return 0
