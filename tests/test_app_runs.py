"""The web app without a browser: run manager (queue position, stop, error capture), form -> config, run folders,
launch safety. Gradio is not needed here."""

import json
import threading
import time
import zipfile

import pytest

from app_support import TINY_YAML, check_glb, run_status, wait_for
from dream3d.app import forms
from dream3d.app.jobs import DONE, FAILED, RUNNING, STOPPED, WAITING, QueueFullError, RunManager
from dream3d.app.launch import check_exposure, main, parse_auth
from dream3d.app.runs import list_runs, obj_zip, reserve_run_dir, resolve_run
from dream3d.app.worker import run_job
from dream3d.errors import ConfigError, Dream3DError, PromptError


class Gate:
    """A fake `execute` that runs until released (or stopped), recording the order jobs started in."""

    def __init__(self):
        self.release = threading.Event()
        self.started: list[str] = []

    def __call__(self, job):
        self.started.append(job.id)
        job.state = RUNNING
        while not self.release.is_set() and not job.stop_requested.is_set():
            time.sleep(0.01)
        job.state = STOPPED if job.stop_requested.is_set() else DONE


def cfg(steps=10):
    return forms.generate_config("a red cube", "sds", "", steps, 0, None, TINY_YAML)


# --- run manager --------------------------------------------------------------------------------------------------
def test_queue_positions_fifo_and_cancel_waiting(tmp_path):
    gate = Gate()
    m = RunManager(gate, runs_per_device=1, max_queue=2)
    a, b, c = (m.submit("generate", cfg(), tmp_path / n, device="cpu") for n in "abc")
    wait_for(lambda: a.state == RUNNING, what="a running")
    assert [m.position(j) for j in (a, b, c)] == [0, 1, 2]
    assert b.state == c.state == WAITING
    with pytest.raises(QueueFullError, match="queue is full"):  # two waiting already
        m.submit("generate", cfg(), tmp_path / "d", device="cpu")
    m.stop(b)  # a waiting job leaves the line without running
    assert b.state == STOPPED and b.done_event.is_set() and b.message == "stopped before it started"
    assert m.position(c) == 1
    gate.release.set()
    assert c.done_event.wait(10) and a.done_event.is_set()
    assert gate.started == [a.id, c.id] and a.state == c.state == DONE
    m.shutdown()


def test_runs_per_device_and_devices_are_separate(tmp_path):
    gate = Gate()
    m = RunManager(gate, runs_per_device=2, max_queue=4)
    jobs = [m.submit("generate", cfg(), tmp_path / str(i), device="cpu") for i in range(3)]
    other = m.submit("generate", cfg(), tmp_path / "g", device="cuda")  # its own line and worker
    wait_for(lambda: sum(j.state == RUNNING for j in jobs) == 2 and other.state == RUNNING, what="3 running")
    assert [m.position(j) for j in jobs] == [0, 0, 1] and m.position(other) == 0
    gate.release.set()
    for j in [*jobs, other]:
        assert j.done_event.wait(10) and j.state == DONE
    m.shutdown()


def test_errors_are_captured_as_one_line(tmp_path, caplog):
    def user_mistake(job):
        raise ConfigError("config key 'steps' must be positive; got 0\nsecond line")

    def bug(job):
        raise RuntimeError("boom")

    m = RunManager(user_mistake)
    j = m.submit("generate", cfg(), tmp_path / "a", device="cpu")
    assert j.done_event.wait(10)
    assert j.state == FAILED and j.error == "config key 'steps' must be positive; got 0"
    m.shutdown()
    m = RunManager(bug)
    j = m.submit("generate", cfg(), tmp_path / "b", device="cpu")
    assert j.done_event.wait(10)
    assert j.state == FAILED and j.error == "internal error (RuntimeError: boom); see the server log"
    assert "Traceback" in caplog.text  # the traceback goes to the server log, not the page
    m.shutdown()


def test_real_run_stops_within_seconds_and_keeps_checkpoint_and_export(tmp_path):
    """A real Trainer run (tiny config) stopped mid-way: state, checkpoint, export, time-based previews."""
    m = RunManager(lambda job: run_job(job, preview_seconds=0.3))
    c = cfg(steps=5000)
    c.preview_every = 100000  # previews can then only come from the timer
    job = m.submit("generate", c, tmp_path / "run", device="cpu")
    wait_for(lambda: job.step >= 15, timeout=120, what="15 steps")
    assert job.state == RUNNING and job.eta_seconds() is not None and job.eta_seconds() > 0
    t0 = time.time()
    m.stop(job)
    wait_for(lambda: job.state in (STOPPED, "exporting", DONE, FAILED), timeout=30, what="the stop")
    stop_s = time.time() - t0
    assert job.done_event.wait(60)
    assert job.state == STOPPED, job.error
    assert stop_s < 10, stop_s
    run = tmp_path / "run"
    status = run_status(run)
    meta = json.loads((run / "checkpoint" / "meta.json").read_text())
    assert status["state"] == "stopped" and meta["step"] == status["step"] == job.step
    assert 15 <= job.step < 5000
    assert len(job.losses) == job.step and [s for s, _ in job.losses] == list(range(1, job.step + 1))
    previews = sorted((run / "previews").glob("step_*.png"))
    assert len(previews) >= 2  # timer previews while running + the one at the stop
    check_glb(run / "export" / "model.glb")
    assert (run / "turntable.mp4").stat().st_size > 0
    with zipfile.ZipFile(run / "export" / "model_obj.zip") as z:
        assert {"model.obj", "model.mtl", "model_albedo.png"} <= set(z.namelist())
    assert job.message == f"stopped at step {job.step}/5000"
    m.shutdown()


def test_real_run_user_mistake_is_captured_and_leaves_no_folder(tmp_path):
    m = RunManager(run_job)
    run = reserve_run_dir(tmp_path / "dog")
    job = m.submit("generate", forms.generate_config("a purple dog", "sds", "", 5, 0, None, TINY_YAML), run)
    assert job.done_event.wait(120)
    assert job.state == FAILED and job.error.startswith("unknown word 'dog'"), job.error
    assert not run.exists()
    m.shutdown()


# --- forms --------------------------------------------------------------------------------------------------------
def test_generate_config_precedence_and_prompt_is_data():
    assert set(forms.methods()) >= {"sds", "vsd", "nfsd", "ssd", "cfd"} and "dds" not in forms.methods()
    c = forms.generate_config("a ${oc.env:HOME} \"cube\"", "nfsd", " bundled ", "30", 7, 3.5,
                              "steps: 99\nseed: 1\nrender: {height: 24}\nguidance: {method: sds, nfsd_threshold: 0.3}")
    assert c.prompt == "a ${oc.env:HOME} \"cube\""  # literal, never interpolated
    assert (c.steps, c.seed, c.guidance.guidance_scale) == (30, 7, 3.5)  # fields win over the editor
    assert c.render.height == 24 and c.guidance.nfsd.threshold == 0.3  # editor wins over the recipe
    assert c.guidance.method == "nfsd" and c.prior == ""  # the method field wins; 'bundled' = default prior
    c = forms.generate_config("a red cube", "vsd", "", None, None, None, "")
    assert c.guidance.guidance_scale == 7.5 and c.guidance.t_anneal_fraction == 0.2  # configs/vsd.yaml


@pytest.mark.parametrize("args, error, message", [
    (("   ",), PromptError, "the prompt is empty"),
    (("a red cube", "xyz"), ConfigError, "unknown method 'xyz'"),
    (("a red cube", "sds", "", None, None, None, "render: {hieght: 3}"), ConfigError,
     "unknown config key 'render.hieght'; did you mean 'render.height'?"),
    (("a red cube", "sds", "", None, None, None, "render: [1, 2"), ConfigError, "cannot parse the advanced config"),
    (("a red cube", "sds", "", 0), ConfigError, "'steps' must be in [1, 1000000]"),
    (("a red cube", "sds", "", 2.5), ConfigError, "steps must be a whole number"),
    (("a red cube", "sds", "", None, "x"), ConfigError, "seed must be a number"),
])
def test_generate_config_user_mistakes(args, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("?", r"\?")):
        forms.generate_config(*args)


def test_edit_config_from_form(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    from dream3d.config import save_config
    save_config(cfg(), src / "config.yaml")
    c = forms.edit_config_from_form(src, "a blue cube", "", 20, 5.0, "guidance: {method: sds, t_min: 0.1}")
    assert (c.guidance.method, c.prompt, c.guidance.dds.source_prompt) == ("dds", "a blue cube", "a red cube")
    assert c.edit_source == str(src.resolve()) and c.steps == 20 and c.guidance.guidance_scale == 5.0
    assert c.guidance.t_min == 0.1 and c.render.height == 16  # editor applied; the source's settings kept
    with pytest.raises(PromptError, match="prompt is empty"):
        forms.edit_config_from_form(src, "")


# --- run folders --------------------------------------------------------------------------------------------------
def test_run_folders(tmp_path):
    a = reserve_run_dir(tmp_path / "x")
    b = reserve_run_dir(tmp_path / "x")
    assert (a.name, b.name) == ("x", "x-2") and a.is_dir() and b.is_dir()
    for d, state, t in ((a, "done", 1), (b, "stopped", 2)):
        (d / "config.yaml").write_text("seed: 0\n")
        (d / "status.json").write_text(json.dumps({"state": state, "step": 3, "steps": 9, "prompt": "p",
                                                   "method": "sds"}))
        import os
        os.utime(d / "status.json", (t * 1e9, t * 1e9))
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert [r.name for r in runs] == ["x-2", "x"] and runs[0].caption == "generate · p · sds · stopped 3/9"
    assert runs[0].glb is None and obj_zip(b) is None
    assert resolve_run(tmp_path, "x") == a
    for bad in ("../x", "x/..", "", "not-a-run", "/etc"):
        with pytest.raises(Dream3DError, match="unknown run"):
            resolve_run(tmp_path, bad)


# --- launch safety ------------------------------------------------------------------------------------------------
def test_launch_safety(capsys):
    assert parse_auth("me:pa:ss") == ("me", "pa:ss")
    for bad in ("me", ":x", "me:"):
        with pytest.raises(Dream3DError, match="USER:PASS"):
            parse_auth(bad)
    check_exposure("127.0.0.1", False, None)
    check_exposure("0.0.0.0", False, ("u", "p"))
    for host, share in (("0.0.0.0", False), ("192.168.1.5", False), ("127.0.0.1", True)):
        with pytest.raises(Dream3DError, match="needs a login"):
            check_exposure(host, share, None)
    assert main(["--host", "0.0.0.0", "--outputs", "unused"]) == 2
    assert "needs a login: add --auth-file FILE" in capsys.readouterr().err


def test_shutdown_stops_running_and_waiting_jobs(tmp_path):
    gate = Gate()
    m = RunManager(gate, runs_per_device=1, max_queue=4)
    a, b = (m.submit("generate", cfg(), tmp_path / n, owner="s1", device="cpu") for n in "ab")
    wait_for(lambda: a.state == RUNNING, what="a running")
    assert m.active("s1") == [a, b] and m.active("s2") == [] and m.active("s1", "edit") == []
    m.shutdown(timeout=10)
    assert a.state == b.state == STOPPED and b.message == "stopped before it started"
    assert gate.started == [a.id]
    with pytest.raises(Dream3DError, match="shutting down"):
        m.submit("generate", cfg(), tmp_path / "c", device="cpu")


def test_two_stage_recipe_runs_both_stages_and_the_job_follows_the_mesh_run(tmp_path):
    m = RunManager(lambda job: run_job(job, preview_seconds=0))
    c = cfg(steps=3)
    c.mesh.refine_steps = 2
    c.mesh.refine_overrides = ["mesh.tet_resolution=16", "mesh.albedo_fit_steps=5", "mesh.carve_views=4",
                               "render.height=16", "render.width=16", "export.texture_size=64",
                               "export.turntable=false"]
    run = tmp_path / "run"
    job = m.submit("generate", c, run, device="cpu")
    assert job.done_event.wait(300)
    assert job.state == DONE, job.error
    mesh_run = tmp_path / "run-mesh"
    assert job.run_dir == mesh_run
    assert run_status(run)["step"] == 3 and run_status(mesh_run)["step"] == 2
    assert "stage: mesh" in (mesh_run / "config.yaml").read_text()
    check_glb(mesh_run / "export" / "model.glb")
    assert obj_zip(mesh_run) is not None and not (run / "export").exists()
    m.shutdown()
