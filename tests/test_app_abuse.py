"""The web app under abuse, through gradio_client and plain HTTP against apps served on 127.0.0.1: bounded work per
request, page limits, a gallery no run folder breaks, operator-chosen priors and no server paths, no uploads, a
delay after repeated wrong logins, Stop through every documented route, launch mistakes as one line, and SIGTERM
during a run (a subprocess) keeping a checkpoint and an export.

Figures (reply times, sizes, memory) are printed (`pytest -s`), never asserted against a clock; the memory bound
of the alias bomb (+50 MB at most) is asserted on the server's resident set (the app runs in this process).
"""

import asyncio
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app_support import REPO, TINY_YAML, close_app, free_port, launch_app, need_gradio, run_status, wait_for

ALIAS_LEVELS = 9  # a "billion laughs" of 10^9 values once expanded, in a few hundred bytes
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(ALIAS_LEVELS - 1))
DEEP_NESTING = "[" * 50_000


def rss_bytes() -> int:
    """The resident set of this process (the server's, since the app runs in it)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def text_of(html: str) -> str:
    """The message of a status line (tags stripped, entities decoded)."""
    import html as html_lib
    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    need_gradio()
    from gradio_client import Client

    outputs = tmp_path_factory.mktemp("abuse_outputs")
    demo, url = launch_app(outputs, preview_seconds=0.3, poll_seconds=0.2)
    yield {"url": url, "outputs": outputs, "demo": demo, "client": Client(url, verbose=False)}
    close_app(demo)


def check(app, method="sds", prior="", steps=None, seed=None, scale=None, config=""):
    return text_of(app["client"].predict(method, prior, steps, seed, scale, config, api_name="/check_config"))


def generate(app, prompt="a red cube", prior="", steps=5, seed=0, config=TINY_YAML):
    """The status line of a /generate that is refused (its only reply)."""
    return text_of(app["client"].predict(prompt, "sds", prior, steps, seed, None, config, api_name="/generate")[0])


def test_alias_bomb_and_deep_nesting_get_one_line_with_memory_unchanged(app):
    before = rss_bytes()
    for text, message in ((ALIAS_BOMB, "expands to more than 100000 values"), (DEEP_NESTING, "nests deeper than")):
        t0 = time.perf_counter()
        line = check(app, config=text)
        took = time.perf_counter() - t0
        assert message in line and "\n" not in line and len(line) < 300, line
        assert message in generate(app, config=text)
        print(f"{len(text)}-character config: {took:.2f} s to the reply {line!r}")
    grown = rss_bytes() - before
    print(f"server memory after both: {grown / 2**20:+.1f} MB")
    assert grown < 50 * 2**20
    assert not any(app["outputs"].iterdir())  # nothing was queued


def test_oversized_settings_are_refused_before_queueing(app):
    manager = app["demo"].run_manager
    cases = [
        (dict(config="render: {height: 8192, width: 8192, batch_size: 64}"), "'render.height' must be in [1, 2048]"),
        (dict(config="export: {texture_size: 65536}"), "'export.texture_size' must be in [4, 8192]"),
        (dict(config="geometry: {log2_hashmap_size: 31}"), "'geometry.log2_hashmap_size' must be in [4, 24]"),
        (dict(config="geometry: {log2_hashmap_size: 22}"), "'geometry.log2_hashmap_size' is at most 20 in this app"),
        (dict(steps=10**12), "'steps' must be in [1, 1000000]"),
        (dict(steps=30_000), "'steps' is at most 25000 in this app"),
        (dict(seed=1e20), "'seed' must be in [0, "),
        (dict(config="mesh: {refine_steps: 5, refine_overrides: ['render.height=1024']}"),
         "'render.height' is at most 512 in this app (in the mesh stage)"),
    ]
    for kwargs, message in cases:
        line = check(app, **kwargs)
        assert message in line, (kwargs, line)
    assert message in generate(app, config=TINY_YAML + "mesh: {refine_steps: 5, refine_overrides: "
                                                       "['render.height=1024']}\n")
    assert "is at most 20 in this app" in generate(app, config=TINY_YAML.replace("log2_hashmap_size: 12",
                                                                                 "log2_hashmap_size: 21"))
    assert manager.get("job1") is None and not any(app["outputs"].iterdir())  # refused before queueing
    assert check(app, config=TINY_YAML).startswith("config OK")


def test_long_prompt_gets_a_short_reply(app):
    import httpx

    url = app["url"] + "gradio_api/call/generate"
    event = httpx.post(url, json={"data": ["x" * 2_000_000, "sds", "", 5, 0, None, TINY_YAML]}, timeout=60).json()
    reply = httpx.get(f"{url}/{event['event_id']}", timeout=60).content
    events = [e for e in reply.split(b"\n\n") if e.strip()]
    print(f"2 MB prompt: {len(reply)} bytes in {len(events)} events: {[len(e) for e in events]}")
    assert events and all(len(e) < 1024 for e in events), reply[:2000]
    assert b"is 2000000 characters long (at most 1000)" in events[-1]


def test_damaged_status_json_leaves_the_run_list_working(app):
    outputs = app["outputs"]
    damaged = {"null-step": '{"step": null}', "a-list": "[]", "text-step": '{"step": "abc"}',
               "not-json": "{", "huge-prompt": json.dumps({"state": "done", "prompt": "p" * 100_000})}
    for name, status in damaged.items():
        (outputs / name).mkdir()
        (outputs / name / "config.yaml").write_text("seed: 0\n")
        (outputs / name / "status.json").write_text(status)
    try:
        _, choices, _ = app["client"].predict(api_name="/runs")
        shown = dict((value, label) for label, value in choices["choices"])
        assert set(shown) == set(damaged)
        for name, value in (("null-step", "None"), ("text-step", "'abc'")):
            assert shown[name] == f"{name} — unreadable · status.json 'step' is {value}, not a step count"
        assert all(len(label) < 300 for label in shown.values())
        assert shown["a-list"] == shown["not-json"].replace("not-json", "a-list") == \
            "a-list — unreadable · status.json holds no run status (not a JSON mapping)"
        line = text_of(app["client"].predict("null-step", api_name="/open_run")[0])
        assert line.startswith("Error: run null-step is unreadable: status.json 'step' is None"), line
        assert app["client"].predict(api_name="/runs")  # the page keeps loading
    finally:
        import shutil
        for name in damaged:
            shutil.rmtree(outputs / name)


def test_priors_and_server_paths_stay_the_operators(app, tmp_path):
    real = tmp_path / "sd-model-here"  # the same length as the missing one
    real.mkdir()
    (real / "model_index.json").write_text("{}")
    missing = tmp_path / "sd-model-gone"
    lines = [check(app, prior=str(p)).replace(str(p), "PATH") for p in (real, missing)]
    assert lines[0] == lines[1] and "is not offered by this app; choose one of: bundled" in lines[0], lines
    assert check(app, prior="someone/some-model").startswith("Error: prior 'someone/some-model' is not offered")
    assert "is not offered" in generate(app, prior=str(real))
    for config, message in (
            (f"prior: {real}", "is not offered"),
            (f"stage: mesh\ninit_from: {tmp_path}", "init_from names a folder on the server"),
            (f"init_from: {tmp_path}", "init_from names a folder on the server"),
            (f"edit_source: {tmp_path}", "edit_source names a folder on the server"),
            (f"mesh: {{refine_steps: 5, refine_overrides: ['prior={real}']}}", "is not offered"),
            (f"mesh: {{refine_steps: 5, refine_overrides: ['init_from={tmp_path}']}}", "(in the mesh stage)")):
        assert message in check(app, config=config), config
    assert check(app, prior=" bundled ").startswith("config OK")


def test_uploads_are_refused(app):
    import httpx
    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder())
    big_files = lambda: {p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 2**20}
    before = big_files()
    try:
        r = httpx.post(app["url"] + "gradio_api/upload", files={"files": ("big.bin", b"0" * (64 * 2**20))},
                       timeout=60)
        status = r.status_code
    except httpx.TransportError as e:  # the server answered and closed before the whole body was sent
        status = type(e).__name__
    print(f"64 MB upload: {status}")
    assert status in (403, 413, "WriteError", "RemoteProtocolError"), status
    small = httpx.post(app["url"] + "gradio_api/upload", files={"files": ("a.txt", b"hello")}, timeout=10)
    assert small.status_code == 403 and small.text == "this app takes no uploads"
    assert big_files() == before


def new_run(outputs: Path, known: set) -> Path | None:
    """The run folder under `outputs` that is not in `known` (None before it is made)."""
    runs = [p for p in outputs.iterdir() if p.is_dir() and p not in known]
    return runs[0] if runs else None


def steps_made(run: Path | None) -> int:
    """Optimisation steps a run has logged so far (metrics.jsonl: one line each)."""
    try:
        return (run / "metrics.jsonl").read_text().count("\n")
    except (OSError, TypeError):
        return 0


@pytest.mark.slow
def test_stop_works_through_gradio_client_and_rest_with_the_session_id(app):
    import httpx

    outputs, known = app["outputs"], set(app["outputs"].iterdir())
    config = TINY_YAML + "export: {enabled: false}\n"  # the stop is what is tried here
    job = app["client"].submit("a red cube", "sds", "", 5000, 0, None, config, api_name="/generate")
    wait_for(lambda: steps_made(new_run(outputs, known)) >= 3, timeout=120, what="3 steps")
    app["client"].predict(api_name="/stop")
    assert "stopped at step" in text_of(job.result(timeout=120)[0])
    known = set(outputs.iterdir())

    url = app["url"] + "gradio_api/call/"
    session = {"session_hash": "rest-session-1"}
    event = httpx.post(url + "generate", json={"data": ["a blue cube", "sds", "", 5000, 0, None, config],
                                               **session}, timeout=30).json()
    stop_sent, last = False, ""
    with httpx.stream("GET", f"{url}generate/{event['event_id']}", timeout=120) as stream:
        for line in stream.iter_lines():  # a status every poll; the stop's own result is not fetched
            last = line if line.startswith("data:") else last
            if not stop_sent and steps_made(new_run(outputs, known)) >= 3:
                httpx.post(url + "stop", json={"data": [], **session}, timeout=30).raise_for_status()
                stop_sent = True
    assert stop_sent and "stopped at step" in last, last


# --- login ---------------------------------------------------------------------------------------------------------
def test_sixth_wrong_login_in_a_row_is_delayed(tmp_path):
    need_gradio()
    import httpx

    from dream3d.app.guards import FIRST_DELAY, FREE_FAILURES

    demo, url = launch_app(tmp_path, auth={"me": "right-password"})
    try:
        guard = demo.auth.__self__  # the LoginGuard whose check is the app's auth
        times = []
        for _ in range(FREE_FAILURES + 1):
            t0 = time.perf_counter()
            r = httpx.post(url + "login", data={"username": "me", "password": "wrong"}, timeout=60)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 400
        print(f"wrong logins: {', '.join(f'{t:.2f}' for t in times)} s")
        assert guard.delays[:FREE_FAILURES] == [0.0] * FREE_FAILURES and guard.delays[-1] >= FIRST_DELAY
        assert times[-1] >= FIRST_DELAY  # the reply waited at least the delay (a lower bound, not a speed goal)
        r = httpx.post(url + "login", data={"username": "me", "password": "right-password"}, timeout=60)
        assert r.status_code == 200 and guard.failures == 0 and guard.delay() == 0
        assert httpx.get(url + "gradio_api/info", timeout=10).status_code in (401, 403)  # still guarded
    finally:
        close_app(demo)


def test_login_guard_delays_double_and_serialise():
    from dream3d.app.guards import FIRST_DELAY, FREE_FAILURES, MAX_DELAY, LoginGuard

    now = [0.0]

    async def fake_sleep(seconds):
        await asyncio.sleep(0)
        now[0] += seconds

    guard = LoginGuard({"me": "pw"}, sleep=fake_sleep, clock=lambda: now[0])
    assert inspect.iscoroutinefunction(guard.check)  # Gradio awaits only coroutine functions

    async def one_after_another():
        return [await guard.check("me", "x") for _ in range(FREE_FAILURES + 8)] + [
            await guard.check("nobody", "pw"), await guard.check("me", "pw")]
    assert asyncio.run(one_after_another()) == [False] * (FREE_FAILURES + 9) + [True]
    expected = [0.0] * FREE_FAILURES + [min(FIRST_DELAY * 2 ** k, MAX_DELAY) for k in range(10)]
    assert guard.delays == expected and guard.failures == 0 and guard.delay() == 0

    async def together():  # three guesses at once after five failures: checked one after the other, 1 s apart
        for _ in range(FREE_FAILURES):
            await guard.check("me", "x")
        start = now[0]
        await asyncio.gather(*(guard.check("me", "x") for _ in range(3)))
        return start
    guard.delays.clear()
    asyncio.run(together())
    assert guard.delays[FREE_FAILURES:] == [1.0, 2.0, 3.0]


def test_credentials_come_from_a_file_or_the_environment(tmp_path, capsys):
    from dream3d.app.launch import AUTH_ENV, credentials

    f = tmp_path / "auth"
    f.write_text("# operators\nme:pa:ss\n\nyou:x\n")
    f.chmod(0o600)
    assert credentials(None, str(f)) == {"me": "pa:ss", "you": "x"}
    assert capsys.readouterr().err == ""
    f.chmod(0o644)
    credentials(None, str(f))
    assert "readable by other users" in capsys.readouterr().err
    assert credentials(None, None, {AUTH_ENV: "env:pw"}) == {"env": "pw"}
    assert credentials(None, None, {}) is None
    for auth, path, message in ((None, str(tmp_path / "none"), "cannot read it"), ("a:b", str(f), "not both")):
        with pytest.raises(Exception, match=message):
            credentials(auth, path)
    f.write_text("just-a-user\n")
    with pytest.raises(Exception, match="line 1 takes USER:PASS"):
        credentials(None, str(f))


# --- launch -------------------------------------------------------------------------------------------------------
def test_launch_mistakes_are_one_line(tmp_path, capsys):
    from dream3d.app.launch import main

    outputs = str(tmp_path / "out")
    (tmp_path / "a-file").write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cases = [(["--port", "70000"], "--port must be in 1..65535; got 70000"),
                 (["--port", "-1"], "--port must be in 1..65535; got -1"),
                 (["--port", str(taken.getsockname()[1])], "is another app serving there?"),
                 (["--outputs", str(tmp_path / "a-file")], "is a file; give a folder"),
                 (["--outputs", str(tmp_path / "a-file" / "x")], "cannot write there"),
                 (["--max-steps", "0"], "the limit of 'steps' must be in [1, 1000000]"),
                 (["--limit", "render.hieght=5"], "--limit takes KEY=MAX with a numeric config key"),
                 (["--allow-prior", str(tmp_path / "missing")], "no such folder"),
                 (["--runs-per-device", "0"], "--runs-per-device must be at least 1")]
        for args, message in cases:
            port = [] if "--port" in args else ["--port", str(free_port())]
            assert main([*args, *port, "--outputs", outputs] if "--outputs" not in args else [*args, *port]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and message in err and "Traceback" not in err, (args, err)


def test_operator_limits_tighten_the_page(tmp_path):
    from dream3d.app import forms
    from dream3d.app.policy import PAGE_LIMITS, PagePolicy, page_limits
    from dream3d.errors import ConfigError

    limits = page_limits(100, ["render.height=16", "export.texture_size=64"])
    assert limits == {**PAGE_LIMITS, "steps": 100, "mesh.refine_steps": 100, "render.height": 16,
                      "export.texture_size": 64}
    policy = PagePolicy(("me/my-model",), limits)
    for steps, config, message in ((101, TINY_YAML, "'steps' is at most 100 in this app"),
                                   (50, TINY_YAML.replace("height: 16", "height: 24"), "'render.height' is at most 16"),
                                   (50, TINY_YAML, "'export.texture_size' is at most 64")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            forms.generate_config("a red cube", "sds", "", steps, 0, None, config, policy)
    assert policy.prior_value(" me/my-model ") == "me/my-model" and policy.prior_value("Bundled") == ""
    with pytest.raises(ConfigError, match="must be in"):
        page_limits(None, ["render.height=100000"])


def test_a_second_signal_exits_at_once():
    script = ("import os, signal, time\n"
              "from dream3d.app import launch\n"
              "for s in (signal.SIGTERM, signal.SIGINT):\n"
              "    signal.signal(s, launch._first_signal)\n"
              "try:\n"
              "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
              "except KeyboardInterrupt:\n"
              "    print('stopping', flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n"
              "print('not reached')\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 128 + signal.SIGINT and r.stdout == "stopping\n", (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("app.py: second signal: exiting now") and "Traceback" not in r.stderr


@pytest.mark.slow
def test_sigterm_during_a_run_keeps_a_checkpoint_and_an_export_and_exits_0(tmp_path):
    need_gradio()
    from gradio_client import Client

    port = free_port()
    outputs = tmp_path / "out"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--outputs", str(outputs),
                             "--preview-seconds", "0"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("serving on" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.submit("a red cube", "sds", "", 20_000, 0, None, TINY_YAML, api_name="/generate")
        wait_for(lambda: steps_made(new_run(outputs, set())) >= 5, timeout=120, what="5 steps")
        run = new_run(outputs, set())
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        err = "".join(lines) + proc.stderr.read()
        assert proc.wait(timeout=300) == 0, err
        print(f"SIGTERM to exit: {time.perf_counter() - t0:.1f} s (the stop, the export, the server's close)")
    finally:
        if proc.poll() is None:
            proc.kill()
    status = run_status(run)
    print(f"stopped at step {status['step']}; server log:\n{err}")
    assert status["state"] == "stopped" and status["step"] >= 5
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == status["step"]
    assert (run / "export" / "model.glb").stat().st_size > 0 and (run / "turntable.mp4").is_file()
    assert "stops after its current step" in err and "waiting at most 600 s" in err
    assert "terminate called" not in err and "Traceback" not in err


def test_readme_lists_the_page_limits():
    from dream3d.app.policy import PAGE_LIMITS

    text = (REPO / "README.md").read_text()
    limits = text[text.index("What a page can ask of the server"):]
    limits = limits[:limits.index("\n\n")]
    for key, value in PAGE_LIMITS.items():
        after = limits[limits.index(f"`{key}`") + len(key) + 2:]
        assert re.search(r"\d+", after).group() == str(value), key
    assert f"| `--max-steps N` | {PAGE_LIMITS['steps']} |" in text
