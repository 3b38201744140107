"""The first hour of a new user: progress off a terminal, phase lines, stop and continue commands, one command
grammar with help everywhere, the app's gallery of every run, export paths, turntable settings."""

import argparse
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dream3d.app.runs import list_runs, resolve_run
from dream3d.app.status import job_html
from dream3d.cli import build_parser, main
from dream3d.config import ExportConfig, RunConfig, save_config
from dream3d.console import HelpFormatter, ProgressReport, continue_hint, format_duration
from dream3d.events import PHASES, Event

SMALL = ["geometry.n_levels=4", "geometry.log2_hashmap_size=12", "geometry.mlp_width=16", "render.height=16",
         "render.width=16", "render.batch_size=1", "render.samples_per_ray=24", "render.shading_warmup_steps=2",
         "preview_every=100", "device=cpu"]
TINY_EXPORT = ["export.resolution=32", "export.texture_size=64", "export.turntable_frames=4",
               "export.turntable_resolution=32"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "dream3d.cli"]
STEP_LINE = re.compile(r"^generate: step (\d+)/(\d+) \(\d+%\) loss \S+ (\d+\.\d\d it/s ETA \S+|-- it/s)$")


def as_argv(command: str) -> list[str]:
    """A printed `dream3d ...` command as this interpreter's argv."""
    words = shlex.split(command)
    assert words[0] == "dream3d", command
    return CLI + words[1:]


# --- progress off a terminal ---------------------------------------------------------------------------------------
def test_generate_into_a_log_file_writes_step_and_phase_lines(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"
    with open(log, "w") as f:  # `dream3d generate ... > log 2>&1`
        r = subprocess.run(CLI + ["generate", "a red cube", "--steps", "5", "--out", str(run), *SMALL,
                                  *TINY_EXPORT], stdout=f, stderr=subprocess.STDOUT, env=ENV, timeout=600)
    text = log.read_text()
    assert r.returncode == 0, text
    lines = text.splitlines()
    steps = [int(m.group(1)) for m in map(STEP_LINE.match, lines) if m]
    assert steps == [1, 2, 3, 4, 5], text  # 5 steps: a line per step (every twentieth, at least 1)
    assert "\r" not in text and "it/s]" not in text  # no bar drawn into the log
    order = [f"generate: {PHASES['prior']} ...", f"generate: {run}: 5 steps",
             f"generate: {PHASES['first_step']} ...", "generate: step 1/5", "generate: done at step 5/5",
             f"generate: exporting {run} ...", f"generate: {PHASES['turntable']} ...", str(run)]
    at = [next((i for i, line in enumerate(lines) if line.startswith(o)), None) for o in order]
    assert None not in at and at == sorted(at), (at, text)
    assert lines[-1] == str(run)

    # export.json names its files relative to the run folder
    record = json.loads((run / "export" / "export.json").read_text())
    assert {"glb", "obj", "turntable_mp4", "turntable_gif"} <= set(record["files"])
    for rel in record["files"].values():
        assert not Path(rel).is_absolute() and (run / rel).is_file(), rel


def test_ctrl_c_prints_the_command_that_continues_the_run(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"
    # Ctrl-C as from a terminal (SIGINT's default action restored: a background shell may have it ignored)
    with open(log, "w") as f:
        proc = subprocess.Popen(CLI + ["generate", "a blue sphere", "--steps", "5000", "--out", str(run), *SMALL,
                                       "checkpoint_every=1000", "export.enabled=false"],
                                stdout=subprocess.PIPE, stderr=f, text=True, env=ENV,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.time() + 300
            while "generate: step 1/5000" not in log.read_text():
                assert proc.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 130, err
    assert out.splitlines()[-1] == str(run)
    stopped = json.loads((run / "status.json").read_text())
    assert stopped["state"] == "stopped" and 1 <= stopped["step"] < 5000
    hint = re.search(r"dream3d: stopped at step (\d+)/5000; continue with: (dream3d generate --resume .+)$", err,
                     re.M)
    assert hint and int(hint.group(1)) == stopped["step"], err
    assert f"generate: stopped at step {stopped['step']}/5000" in err

    # the printed command continues the run from its checkpoint (here with fewer steps left, to be quick)
    r = subprocess.run(as_argv(hint.group(2)) + ["--steps", str(stopped["step"] + 2)], capture_output=True,
                       text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"generate: resuming {run} at step {stopped['step']}/{stopped['step'] + 2}" in r.stderr
    assert json.loads((run / "status.json").read_text())["step"] == stopped["step"] + 2


def test_progress_lines_every_n_steps_or_seconds_and_phase_times():
    out = io.StringIO()
    report = ProgressReport("generate", stream=out, terminal=False, every_steps=10, every_seconds=1e9,
                            phase_seconds=0.0)
    run = Path("/runs/x")
    report(Event("phase", 0, 40, run, phase="prior"))
    report(Event("start", 0, 40, run))
    for step in range(1, 41):
        report(Event("step", step, 40, run, metrics={"loss": 1.0 / step}))
    report(Event("done", 40, 40, run))
    lines = out.getvalue().splitlines()
    assert lines[0] == "generate: loading the prior ..."
    assert re.fullmatch(r"generate: loading the prior: \d+\.\d s", lines[1])
    steps = [int(m.group(1)) for m in map(STEP_LINE.match, lines) if m]
    assert steps == [1, 11, 21, 31, 40]  # the first, every 10 after the last line, the last
    assert lines[-1] == "generate: done at step 40/40 (checkpoint saved in /runs/x)"

    out = io.StringIO()  # every_seconds=0: a line per step; the mesh stage is labelled refine
    report = ProgressReport("generate", stream=out, terminal=False, every_steps=1000, every_seconds=0.0)
    report(Event("start", 5, 8, run, stage="mesh", resumed=True))
    for step in (6, 7):
        report(Event("step", step, 8, run, stage="mesh", metrics={"loss": 0.5}))
    report(Event("stopped", 7, 8, run, stage="mesh"))
    assert out.getvalue().splitlines() == [
        "refine: resuming /runs/x at step 5/8", "refine: step 6/8 (75%) loss 0.5 -- it/s",
        out.getvalue().splitlines()[2], "refine: stopped at step 7/8 (checkpoint saved in /runs/x)"]
    assert re.fullmatch(r"refine: step 7/8 \(88%\) loss 0\.5 \d+\.\d\d it/s ETA \d+s", out.getvalue().splitlines()[2])
    assert (format_duration(59.4), format_duration(61), format_duration(3600 * 2 + 60 * 5)) == ("59s", "1m01s",
                                                                                                 "2h05m")


def test_a_stop_outside_the_loop_says_what_to_do(tmp_path):
    run = tmp_path / "run"
    assert continue_hint(None, run) == "nothing was saved yet; run the same command again"
    assert "nothing was saved" in continue_hint(Event("phase", 0, 9, run, phase="prior"), run)
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    hint = continue_hint(Event("phase", 0, 9, run, phase="mesh_init"), run)
    assert hint == f"stopped at the start; continue with: dream3d generate --resume {run}"
    assert continue_hint(Event("export", 9, 9, run), run) == \
        f"the run is finished; export it again with: dream3d export {run}"


# --- one command grammar ---------------------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser, name: str = "dream3d"):
    """(name, parser) of the parser and every subcommand below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help_and_its_default():
    commands = dict(_commands(build_parser()))
    assert {"dream3d generate", "dream3d edit", "dream3d refine", "dream3d export", "dream3d batch",
            "dream3d prior train", "dream3d prior sample", "dream3d prior eval", "dream3d bench hashgrid",
            "dream3d bench shapes"} <= set(commands)
    for name, parser in commands.items():
        assert parser.formatter_class is HelpFormatter, name
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and len(action.help) > 8, f"{what} has no help text"
            if action.option_strings and action.default is not None and action.default is not False and \
                    action.default != []:
                assert f"(default: {action.default})" in text, f"{what}: its default is not shown"
            elif action.option_strings and not action.required and action.nargs != 0:
                assert "default" in action.help, f"{what}: the help does not say what happens without it"


def test_shared_options_mean_the_same_in_every_command():
    commands = dict(_commands(build_parser()))
    for name in ("dream3d generate", "dream3d edit", "dream3d refine", "dream3d batch"):
        opts = {o: a for a in commands[name]._actions for o in a.option_strings}
        assert opts["--steps"].type is int and "steps" in opts["--steps"].help, name
        assert "recipe" in opts["--config"].help, name
        assert "folder" in opts["--out"].help, name
    for name in ("dream3d generate", "dream3d batch"):
        opts = {o: a for a in commands[name]._actions for o in a.option_strings}
        assert opts["--seed"].type is int and "hub id" in opts["--prior"].help


def test_a_command_error_shows_that_commands_usage(capsys):
    for argv, usage in ((["batch", "prompts.txt", "--bogus"], "usage: dream3d batch"),
                        (["generate", "a red cube", "--stepz", "3"], "usage: dream3d generate"),
                        (["refine", "run", "--steps", "many"], "usage: dream3d refine")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(usage), err
        assert err.count("\n") <= 8, err


def test_batch_steps_seed_prior_and_recipe_reach_every_job(tmp_path, monkeypatch):
    import dream3d.batch.run as batch_run
    from dream3d.batch.jobs import build_jobs, parse_prompts

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a red cube"}) + "\n" + json.dumps({"prompt": "a blue cube",
                                                                                "steps": 7}) + "\n")
    seen = {}
    monkeypatch.setattr(batch_run, "run_batch", lambda opts: seen.setdefault("opts", opts) and 0)
    prior = tmp_path / "prior"
    prior.mkdir()
    assert main(["batch", str(prompts), "--steps", "4", "--seed", "5", "--prior", str(prior), "--config", "vsd",
                 "steps=9", "--out", str(tmp_path / "b")]) == 0
    opts = seen["opts"]
    jobs = build_jobs(parse_prompts(prompts), opts.config, opts.overrides, opts.seeds, prompts_dir=tmp_path)
    assert [j.cfg.steps for j in jobs] == [4, 7]  # --steps wins over steps=9, a line's own steps over both
    assert [j.cfg.seed for j in jobs] == [5, 5] and {j.cfg.prior for j in jobs} == {str(prior.resolve())}
    assert {j.cfg.guidance.method for j in jobs} == {"vsd"}


@pytest.mark.slow
def test_batch_file_steps_4_runs(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    out = tmp_path / "out"
    r = subprocess.run(CLI + ["batch", str(prompts), "--steps", "4", "--out", str(out), *SMALL,
                              "export.enabled=false"], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    (job,) = json.loads((out / "batch.json").read_text())["jobs"]
    assert job["state"] == "done" and job["step"] == job["steps"] == 4


# --- the app ---------------------------------------------------------------------------------------------------
def _fake_run(path: Path, cfg: RunConfig, status: dict, mtime: float) -> None:
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    (path / "status.json").write_text(json.dumps({"step": 3, "steps": 3, "method": cfg.guidance.method,
                                                  "prompt": cfg.prompt, **status}))
    os.utime(path / "status.json", (mtime, mtime))


def test_gallery_lists_every_run_under_outputs_with_its_kind(tmp_path):
    nerf = RunConfig(prompt="a red cube")
    mesh = RunConfig(prompt="a red cube", stage="mesh", init_from=str(tmp_path / "a-red-cube"))
    edit = RunConfig(prompt="a blue cube", edit_source=str(tmp_path / "a-red-cube"))
    _fake_run(tmp_path / "a-red-cube", nerf, {"state": "done", "stage": "nerf"}, 1e9)
    _fake_run(tmp_path / "a-red-cube-mesh", mesh, {"state": "done", "stage": "mesh"}, 1e9 + 1)
    _fake_run(tmp_path / "a-blue-cube", edit, {"state": "stopped", "stage": "nerf"}, 1e9 + 2)
    _fake_run(tmp_path / "batch-prompts" / "a-green-cone-s0-1a2b", RunConfig(prompt="a green cone"),
              {"state": "done"}, 1e9 + 3)  # status.json without a stage (older runs): the config's
    _fake_run(tmp_path / "batch-prompts" / "a-green-cone-s0-1a2b-mesh", mesh, {"state": "running"}, 1e9 + 4)
    (tmp_path / "batch-prompts" / "logs").mkdir()
    (tmp_path / "batch-prompts" / "batch.json").write_text("{}")

    runs = list_runs(tmp_path)
    assert [(r.name, r.kind) for r in runs] == [
        ("batch-prompts/a-green-cone-s0-1a2b-mesh", "mesh"), ("batch-prompts/a-green-cone-s0-1a2b", "generate"),
        ("a-blue-cube", "edit"), ("a-red-cube-mesh", "mesh"), ("a-red-cube", "generate")]
    assert runs[0].caption == "mesh · a red cube · sds · running 3/3"
    assert runs[2].caption == "edit · a blue cube · sds · stopped 3/3"
    assert resolve_run(tmp_path, "batch-prompts/a-green-cone-s0-1a2b") == tmp_path / "batch-prompts" / \
        "a-green-cone-s0-1a2b"
    for bad in ("batch-prompts", "batch-prompts/../a-red-cube", "batch-prompts//x", "/batch-prompts/x",
                "batch-prompts/logs", "a/b/c/d"):
        with pytest.raises(Exception, match="unknown run"):
            resolve_run(tmp_path, bad)


def test_queue_wording_and_launch_hint():
    from dream3d.app.jobs import WAITING, Job
    from dream3d.app.launch import launch_hint

    job = Job(id="j", kind="generate", cfg=RunConfig(prompt="a red cube"), run_dir=Path("r"), device="cpu",
              state=WAITING)
    first, third = job_html(job, job.snapshot(), 1), job_html(job, job.snapshot(), 3)
    assert "0 runs" not in first and "next" in first
    assert "2 runs wait ahead of this one" in third
    hint = launch_hint("http://127.0.0.1:7860/")
    assert "http://127.0.0.1:7860/" in hint and "--share --auth USER:PASS" in hint and "share=True" not in hint
    assert "public link https://x.gradio.live" in launch_hint("http://127.0.0.1:7860/", "https://x.gradio.live",
                                                              True)


def test_viewer_opens_at_a_three_quarter_view():
    pytest.importorskip("gradio")
    import gradio as gr

    from dream3d.app.ui import VIEWER_CAMERA, build_app

    alpha, beta, _ = VIEWER_CAMERA
    assert alpha % 90 != 0 and 0 < beta < 90  # between two side faces, from above the horizon
    demo = build_app(Path("/nonexistent-outputs"))
    viewers = [b for b in demo.blocks.values() if isinstance(b, gr.Model3D)]
    assert viewers and all(tuple(v.camera_position) == VIEWER_CAMERA for v in viewers)


# --- outputs ---------------------------------------------------------------------------------------------------
def test_turntable_defaults_are_worth_watching():
    e = ExportConfig()
    assert e.turntable_resolution >= 256 and 2.0 <= e.turntable_frames / e.turntable_fps <= 10.0


# --- install ---------------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
FAKE_PIP = """#!/bin/sh
echo "pip $*" >> "$PIP_CALLS"
echo "pip chatter that the install keeps out of sight"
case "$*" in *download.pytorch.org*) [ -n "$CPU_INDEX_DOWN" ] && exit 1;; esac
exit 0
"""
FAKE_PYTHON = """#!/bin/sh
printf 'pillow==12.3.0\\ndream3d==0.1.0\\nnumpy==2.4.6\\ntorch==2.13.0+cpu\\n'
"""


def _make(tmp_path: Path, target: str, gpu: bool = False, cpu_index_down: bool = False):
    """Run a Makefile target with a fake pip/python in a fake venv; (pip calls, make's output)."""
    make = __import__("shutil").which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv, tools = tmp_path / "venv", tmp_path / "tools"
    (venv / "bin").mkdir(parents=True)
    tools.mkdir()
    for name, text in (("pip", FAKE_PIP), ("python", FAKE_PYTHON)):
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    for tool in ("true", "mkdir", "touch", "cat", "grep", "sed", "id"):  # a PATH without nvidia-smi
        os.symlink(__import__("shutil").which(tool), tools / tool)
    if gpu:
        (tools / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (tools / "nvidia-smi").chmod(0o755)
    calls = tmp_path / "pip_calls"
    env = {"PATH": str(tools), "PIP_CALLS": str(calls), **({"CPU_INDEX_DOWN": "1"} if cpu_index_down else {})}
    r = subprocess.run([make, "-s", "-C", str(REPO), f"VENV={venv}", f"BIN={venv / 'bin'}", "PY=true",
                        f"CACHE={tmp_path / 'cache'}", target.format(venv=venv, cache=tmp_path / "cache")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return calls.read_text().splitlines(), r.stdout + r.stderr


def test_makefile_installs_the_cpu_torch_from_the_cpu_index_first(tmp_path):
    calls, out = _make(tmp_path / "offline", "{venv}/bin/dream3d", cpu_index_down=True)
    torch = [i for i, c in enumerate(calls) if "torch==2.13.0" in c]
    dream3d = [i for i, c in enumerate(calls) if "-e .[dev]" in c]
    assert len(torch) == 2 and "--index-url https://download.pytorch.org/whl/cpu" in calls[torch[0]]
    assert "--timeout" in calls[torch[0]] and "download.pytorch.org" not in calls[torch[1]]  # then plain pip
    assert torch[1] < dream3d[0], calls  # torch before anything that depends on it
    assert "pip chatter" not in out and "CPU index is out of reach" in out  # quiet, but says what it did

    calls, out = _make(tmp_path / "online", "{venv}/bin/dream3d")
    assert [c for c in calls if "torch==" in c] == [next(c for c in calls if "whl/cpu" in c)]  # CPU index only

    calls, _ = _make(tmp_path / "gpu", "{venv}/bin/dream3d", gpu=True)
    assert [c for c in calls if "torch==" in c] == ["pip install -q torch==2.13.0"]  # the CUDA build


def test_makefile_test_deps_downgrade_nothing_and_chromium_comes_without_recommends(tmp_path):
    calls, _ = _make(tmp_path, "{cache}/app-test-deps")
    keep = (tmp_path / "cache" / "keep-versions.txt").read_text().split()
    assert keep == ["pillow>=12.3.0", "numpy>=2.4.6", "torch>=2.13.0"]  # at least its version; local labels (+cpu) go
    (deps,) = [c for c in calls if "playwright" in c]
    assert f"-c {tmp_path / 'cache' / 'keep-versions.txt'}" in deps and ".[app,distributed]" in deps
    apt = [line for line in (REPO / "Makefile").read_text().splitlines() if "apt-get install" in line]
    assert apt and all("--no-install-recommends" in line for line in apt)


# --- hub ids without a network ---------------------------------------------------------------------------------
def test_an_unreachable_hub_is_one_line_without_retries(tmp_path):
    env = {k: v for k, v in ENV.items() if "proxy" not in k.lower() and k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))  # nothing listens on port 9
    t0 = time.time()
    r = subprocess.run(CLI + ["generate", "a hamburger", "--prior", "no-such-owner/no-such-model", "--steps", "1",
                              "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if not line.startswith("generate: ")]
    assert errors == [errors[0]] and "Retry" not in r.stderr, r.stderr
    assert errors[0].startswith("dream3d: error: cannot load prior 'no-such-owner/no-such-model': not in the local "
                                "hub cache, and 127.0.0.1 is out of reach")
    assert time.time() - t0 < 120  # the hub client's retries alone took 30 s


def test_hf_hub_offline_is_honoured_without_a_probe(monkeypatch):
    from dream3d.priors import loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    probes = []
    monkeypatch.setattr(loading, "socket", __import__("types").SimpleNamespace(
        create_connection=lambda *a, **k: probes.append(a) or pytest.fail("probed the network")))
    loading.hub_offline.cache_clear()
    try:
        assert loading.hub_offline() == "HF_HUB_OFFLINE is set"
        with pytest.raises(Exception, match="not in the local hub cache, and HF_HUB_OFFLINE is set"):
            loading.read_index("no-such-owner/no-such-model")
        assert probes == []
    finally:
        loading.hub_offline.cache_clear()


def test_on_a_terminal_a_bar_and_phase_lines_above_it():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    report = ProgressReport("generate", stream=out, phase_seconds=0.0)
    run = Path("/runs/x")
    report(Event("phase", 0, 3, run, phase="prior"))
    report(Event("start", 0, 3, run))
    report(Event("phase", 0, 3, run, phase="first_step"))
    for step in (1, 2, 3):
        report(Event("step", step, 3, run, metrics={"loss": 0.25}))
    report(Event("done", 3, 3, run))
    text = out.getvalue()
    assert "generate: loading the prior ..." in text and f"generate: {PHASES['first_step']} ..." in text
    assert "3/3" in text and "loss=0.25" in text  # the tqdm bar, not step lines
    assert not any(STEP_LINE.match(line) for line in text.splitlines())
