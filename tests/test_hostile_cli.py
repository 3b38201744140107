"""Hostile and careless use of the command line: impossible values, damaged files, foreign and source folders,
contradicting resumes, unsafe prompts, two writers. Each case: no traceback, exit status 2 (or the documented
one), one error line under 300 characters naming the problem, and nothing changed outside the run folder.

Most cases run through `dream3d.cli.main` inside one subprocess (`_many`), so the suite pays Python's and
torch's start-up once; the cases that depend on the process itself (argv bytes, the terminal text, locks, resume)
run as `python -m dream3d.cli`."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hostile_support import DAMAGES, damage_checkpoint
from safetensors.torch import load_file

SMALL = ["geometry.n_levels=4", "geometry.log2_hashmap_size=12", "geometry.mlp_width=16", "render.height=16",
         "render.width=16", "render.batch_size=2", "render.samples_per_ray=24", "render.shading_warmup_steps=2",
         "export.enabled=false", "preview_every=100", "device=cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
RUNNER = textwrap.dedent("""
    import contextlib, io, json, sys, traceback
    from dream3d.cli import main
    out = []
    for argv in json.load(open(sys.argv[1])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
            except BaseException:
                rc, _ = "traceback", traceback.print_exc()
        out.append([rc, err.getvalue()])
    json.dump(out, open(sys.argv[2], "w"))
""")


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dream3d.cli", *args], capture_output=True, env=ENV, timeout=600,
                          **kw)


def _many(tmp_path: Path, cases: list[list[str]]) -> list[tuple[object, str]]:
    """(exit status, stderr) of `dream3d.cli.main(argv)` for each argv, all in one subprocess."""
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    r = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "cases.json"), str(tmp_path / "out.json")],
                       capture_output=True, text=True, env=ENV, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return [tuple(x) for x in json.loads((tmp_path / "out.json").read_text())]


def _one_error_line(rc, err: str, expected: str, status: int = 2) -> None:
    assert "Traceback" not in err and rc == status, (rc, err[-2000:])
    lines = [ln for ln in err.splitlines() if ln.startswith("dream3d: error:")]
    assert len(lines) == 1 and len(lines[0]) < 300, err[-1000:]
    assert expected in lines[0], (expected, lines[0])


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".lock":
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 (kept as checkpoint.prev) and 4."""
    run = tmp_path_factory.mktemp("hostile") / "red"
    r = cli("generate", "a red cube", "--out", str(run), "--steps", "4", "checkpoint_every=2", *SMALL)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return run


def _damaged(finished: Path, root: Path, name: str, how: str) -> str:
    run = root / name
    shutil.copytree(finished, run)
    if how in DAMAGES:
        for slot in ("checkpoint", "checkpoint.prev"):
            damage_checkpoint(run / slot, how)
    if how == "config-latin1":
        (run / "config.yaml").write_bytes((run / "config.yaml").read_bytes().replace(b"a red cube", b"caf\xe9"))
    elif how == "config-arch":
        text = (run / "config.yaml").read_text().replace("log2_hashmap_size: 12", "log2_hashmap_size: 14")
        (run / "config.yaml").write_text(text)
    elif how == "config-garbage":
        (run / "config.yaml").write_text("geometry: [unclosed\n")
    return str(run)


def test_hostile_command_lines_get_one_line_and_change_nothing(finished, tmp_path):
    before = _tree_hash(finished)
    src = str(finished)
    out = str(tmp_path / "new")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("my: own\n")
    (foreign / "status.json").write_text('{"mine": true}')
    foreign_hash = _tree_hash(foreign)
    bomb = tmp_path / "bomb.yaml"
    text, prev = "a: &a [" + ", ".join(['"lol"'] * 9) + "]\n", "a"
    for i in range(9):
        text, prev = text + f"l{i}: &l{i} [" + ", ".join([f"*{prev}"] * 9) + "]\n", f"l{i}"
    bomb.write_text(text + f"prompt: *{prev}\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("render: " + "[" * 50_000 + "]" * 50_000)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"prompt: caf\xe9\n")
    gen = ["generate", "a red cube", "--steps", "2", *SMALL, "--out", out]
    cases = [  # (argv, expected text in the error line)
        ([*gen, "optim.lr=-1"], "optim.lr' must be in (0, 10]"),
        ([*gen, "optim.eps=-1"], "optim.eps"), ([*gen, "optim.betas=[1.5,0.99]"], "[0, 1)"),
        ([*gen, "optim.betas=[0.9]"], "list of 2 values"),
        ([*gen, "geometry.log2_hashmap_size=40"], "[4, 24]"), ([*gen, "geometry.log2_hashmap_size=-3"], "[4, 24]"),
        ([*gen, "render.shading_probs=[.nan,1,1]"], "finite"), ([*gen, "geometry.bound=-1"], "(0, 100]"),
        ([*gen, "guidance.guidance_scale=.nan"], "finite"), ([*gen, "guidance.guidance_scale=.inf"], "finite"),
        ([*gen, "camera.fov_range=[0,0]"], "(0, 180)"), ([*gen, "guidance.method=dds"], "dream3d edit"),
        ([*gen, "render.height=100000"], "[1, 2048]"), ([*gen, "mesh.tet_resolution=100000"], "[2, 256]"),
        ([*gen, "render.samples_per_ray=1e9"], "[1, 4096]"), ([*gen, "export.texture_size=1e6"], "[4, 8192]"),
        ([*gen, "--seed", "99999999999999999999999"], "seed"), ([*gen, "--steps", "-5"], "steps"),
        ([*gen, "--steps", "0"], "steps"), ([*gen, "--steps", "100000000"], "[1, 1000000]"),
        ([*gen, "--config", str(bomb)], "values (YAML aliases?)"), ([*gen, "--config", str(deep)], "deeper than"),
        ([*gen, "--config", str(latin)], "latin.yaml: the config file is not UTF-8"),
        (["generate", "x" * 100_000, *SMALL, "--out", out], "at most 1000"),
        (["export", src, "--resolution", "0"], "--resolution must be in [8, 1024]"),
        (["export", src, "--texture", "100000"], "--texture must be in [4, 8192]"),
        (["export", src, "--format", "fbx"], "--format takes glb and/or obj"),
        (["generate", "a red cube", *SMALL, "--out", str(a_file)], "is a file"),
        (["generate", "a red cube", *SMALL, "--out", str(a_file / "run")], "which is a file"),
        (["generate", "a red cube", *SMALL, "--out", "/proc/dream3d-run"], "cannot write the run folder"),
        (["generate", "a red cube", *SMALL, "--out", str(foreign)], "files that are not a dream3d run"),
        (["generate", "a blue cube", "--steps", "4", "checkpoint_every=2", *SMALL, "--out", src],
         "holds a finished run of 'a red cube'"),
        (["edit", src, "--prompt", "a blue cube", "--out", src], "would overwrite its source run"),
        (["refine", src, "--out", src], "would overwrite its source run"),
        (["refine", src, "--out", str(finished / "export")], "would overwrite its source run"),
        (["generate", "--resume", src, "a blue cube"], "drop the prompt 'a blue cube'"),
        (["generate", "--resume", src, "guidance.guidance_scal=5"], "did you mean 'guidance.guidance_scale'"),
        (["generate", "--resume", src, "--steps", "-5"], "--steps must be in [1, 1000000]"),
        (["generate", "--resume", src, "--steps", "3"], "already at step 4"),
        (["generate", "--resume", src, "--seed", "9"], "cannot change seed"),
        (["generate", "--resume", src, "render.height=32"], "cannot change render.height"),
        (["generate", "--resume", src, "--out", out], "drop --out"),
        (["generate", "--resume", str(tmp_path / "nothing")], "no such folder"),
        (["export", str(foreign)], "yaml"),
    ]
    for how in ("cut", "empty", "header", "meta"):
        cases.append((["export", _damaged(finished, tmp_path, f"x-{how}", how), "--no-turntable"], "checkpoint"))
    cases += [
        (["generate", "--resume", _damaged(finished, tmp_path, "r-cut", "cut")], "tensors.safetensors"),
        (["refine", _damaged(finished, tmp_path, "f-cut", "cut"), "--steps", "1"], "tensors.safetensors"),
        (["edit", _damaged(finished, tmp_path, "e-cut", "cut"), "--prompt", "a blue cube", "--steps", "1"],
         "tensors.safetensors"),
        (["export", _damaged(finished, tmp_path, "x-latin", "config-latin1")], "config.yaml: the config file is not"),
        (["generate", "--resume", _damaged(finished, tmp_path, "r-latin", "config-latin1")], "not UTF-8"),
        (["refine", _damaged(finished, tmp_path, "f-latin", "config-latin1")], "not UTF-8"),
        (["edit", _damaged(finished, tmp_path, "e-latin", "config-latin1"), "--prompt", "a blue cube"], "not UTF-8"),
        (["export", _damaged(finished, tmp_path, "x-arch", "config-arch")], "does not fit the run's config"),
        (["generate", "--resume", _damaged(finished, tmp_path, "r-arch", "config-arch")], "does not fit"),
        (["export", _damaged(finished, tmp_path, "x-garbage", "config-garbage")], "cannot parse"),
    ]
    results = _many(tmp_path, [argv for argv, _ in cases])
    for (argv, expected), (rc, err) in zip(cases, results):
        _one_error_line(rc, err, expected)
    assert _tree_hash(finished) == before  # no case changed the source run
    assert _tree_hash(foreign) == foreign_hash and a_file.read_text() == "mine"
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_unsafe_prompts_are_escaped_cut_or_refused(tmp_path):
    r = cli("generate", "a red \x1b[2J\rcube" + "x" * 2000, "--out", str(tmp_path / "a"), *SMALL)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err
    assert "\x1b" not in err and "\r" not in err and "\\x1b[2J\\r" in err and "more characters)" in err
    assert len(err.strip().splitlines()[-1]) < 300
    r = cli(b"generate", b"a red \xff cube", "--out", str(tmp_path / "b"), *SMALL)
    _one_error_line(r.returncode, r.stderr.decode(), "not valid UTF-8")


def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one_exactly(finished, tmp_path):
    ref = tmp_path / "ref"
    assert cli("generate", "a red cube", "--out", str(ref), "--steps", "6", "checkpoint_every=2",
               *SMALL).returncode == 0
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    t = run / "checkpoint" / "tensors.safetensors"
    t.write_bytes(t.read_bytes()[:1000])  # newest (step 4) cut short; checkpoint.prev holds step 2
    r = cli("generate", "--resume", str(run), "--steps", "6")
    err = r.stderr.decode()
    assert r.returncode == 0, err[-2000:]
    assert "skipped a damaged checkpoint" in err and "checkpoint.prev (step 2)" in err
    a, b = load_file(str(ref / "checkpoint" / "tensors.safetensors")), load_file(str(t))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # lost one interval, nothing else
    assert json.loads((run / "status.json").read_text())["step"] == 6


def test_a_second_writer_is_refused_naming_the_owner_and_a_dead_owner_is_taken_over(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom dream3d.run_folder import RunFolder\n"
                               "with RunFolder(sys.argv[1]).locked('generate'):\n print('held', flush=True)\n"
                               " time.sleep(60)", str(run)], env=ENV, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        r = cli("generate", "--resume", str(run), "--steps", "5")
        _one_error_line(r.returncode, r.stderr.decode(), f"is in use by generate (pid {holder.pid}")
        r = cli("export", str(run), "--no-turntable")
        _one_error_line(r.returncode, r.stderr.decode(), "is in use by generate")
    finally:
        holder.kill()
        holder.wait()
    (run / ".lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "command": "generate",
                                           "since": "2026-01-01T00:00:00+00:00"}))  # left by a killed process
    t0 = time.time()
    r = cli("generate", "--resume", str(run), "--steps", "5")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert f"took over the lock of {run} left by pid {holder.pid}" in r.stderr.decode()
    assert time.time() - t0 < 120 and json.loads((run / "status.json").read_text())["step"] == 5


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    from dream3d.config import load_config
    from dream3d.run_folder import default_run_dir, reserve_run_dir

    cfg = load_config(None, ["seed=3"])
    first = reserve_run_dir(default_run_dir(cfg, tmp_path).path)
    second = reserve_run_dir(first)
    assert first != second and first.is_dir() and second.is_dir() and second.name == first.name + "-2"


def test_damaged_prior_folders_and_batch_manifests_are_one_line(tmp_path):
    from tiny_models import save_tiny_bundled

    prior = save_tiny_bundled(tmp_path / "prior")
    bad_index = tmp_path / "prior-latin"
    shutil.copytree(prior, bad_index)
    (bad_index / "model_index.json").write_bytes(b'{"_class_name": "caf\xe9"}')
    bad_meta = tmp_path / "prior-meta"
    shutil.copytree(prior, bad_meta)
    (bad_meta / "dream3d_prior.json").write_text("{not json")
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "batch.json").write_text("[garbage")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    cases = [
        (["generate", "a red cube", "--prior", str(bad_index), *SMALL, "--out", str(tmp_path / "a")],
         "model_index.json is not UTF-8"),
        (["generate", "a red cube", "--prior", str(bad_meta), *SMALL, "--out", str(tmp_path / "b")],
         "dream3d_prior.json is not valid JSON"),
        (["batch", str(prompts), "--out", str(batch), "steps=2", *SMALL], "batch.json: the batch manifest is not"),
    ]
    for (argv, expected), (rc, err) in zip(cases, _many(tmp_path, [argv for argv, _ in cases])):
        _one_error_line(rc, err, expected)


@pytest.mark.slow
def test_ctrl_c_during_a_kernel_build_stops_it_in_one_line_and_releases_the_lock(tmp_path):
    import fcntl

    cache = tmp_path / "cache"  # empty: the first step compiles the C++ kernel
    p = subprocess.Popen([sys.executable, "-m", "dream3d.cli", "generate", "a red cube", "--steps", "2", "--out",
                          str(tmp_path / "run"), *SMALL, "geometry.encoding_backend=cpp"],
                         env={**ENV, "DREAM3D_EXT_CACHE": str(cache)}, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not [lock for lock in cache.glob("*/dream3d-build.lock") if lock.read_text()]:
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        (lock,) = cache.glob("*/dream3d-build.lock")
        assert json.loads(lock.read_text())["pid"] == p.pid
        time.sleep(0.5)
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 130, err
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert line.endswith(f"continue with: dream3d generate --resume {tmp_path / 'run'}")
    assert lock.read_text() == "" and not (lock.parent / "lock").exists()  # ours released, torch's baton gone
    with open(lock) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
    assert not list(lock.parent.glob("*.so"))
