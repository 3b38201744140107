"""dream3d batch end to end: isolation, rerun/skip, kill -9 and Ctrl-C then resume, shards, Ray, gallery.

Every generation here is tiny (6-40 steps at 32x32, one view per step, 32^3 export, 4-frame turntable).
One finished 4-job batch (3 good prompts + one the bundled prior rejects) is shared by several tests.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here runs dream3d batch in subprocesses (12 to 90 s each on 2 cores)

TINY = ["steps=6", "checkpoint_every=2", "preview_every=100", "device=cpu", "geometry.n_levels=4",
        "geometry.log2_hashmap_size=12", "geometry.mlp_width=16", "render.height=32", "render.width=32",
        "render.batch_size=1", "render.samples_per_ray=24", "export.resolution=32", "export.texture_size=64",
        "export.turntable_frames=4", "export.turntable_resolution=32"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PROMPTS4 = ["a red cube", "a blue sphere", "a hamburger", "a green cone"]  # "hamburger": unknown to the prior


def batch_cmd(prompts, out, *args):
    return [sys.executable, "-m", "dream3d.cli", "batch", str(prompts), "--out", str(out), *args, *TINY]


def run_batch(prompts, out, *args, timeout=600):
    return subprocess.run(batch_cmd(prompts, out, *args), capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def manifest(out) -> dict:
    return {e["name"]: e for e in json.loads((Path(out) / "batch.json").read_text())["jobs"]}


def mtimes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def wait_for(cond, timeout=300.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = cond()
        except (OSError, ValueError, KeyError, IndexError):  # files being replaced
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def batch4(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch4")
    prompts = root / "prompts.txt"
    prompts.write_text("# four jobs, one the prior cannot do\n" + "\n".join(PROMPTS4[:2]) + "\n\n"
                       + "\n".join(PROMPTS4[2:]) + "\n")
    out = root / "out"
    r = run_batch(prompts, out, "--workers", "2")
    return {"prompts": prompts, "out": out, "result": r}


# --- the shared 4-job batch ------------------------------------------------------------------------------------
def test_bad_job_is_isolated(batch4):
    r, out = batch4["result"], batch4["out"]
    assert r.returncode == 1, r.stderr  # some job failed
    assert r.stdout.strip().splitlines()[-1] == str(out)
    jobs = list(manifest(out).values())
    assert [e["prompt"] for e in jobs] == PROMPTS4  # file order, comments and blank lines skipped
    states = {e["prompt"]: e["state"] for e in jobs}
    assert states == {"a red cube": "done", "a blue sphere": "done", "a hamburger": "failed", "a green cone": "done"}
    bad = next(e for e in jobs if e["state"] == "failed")
    assert "unknown word 'hamburger'" in bad["error"] and "\n" not in bad["error"]
    assert (out / bad["run_dir"] / "error.log").is_file()
    for e in jobs:
        if e["state"] != "done":
            continue
        run = out / e["run_dir"]
        assert json.loads((run / "status.json").read_text())["step"] == 6
        for key in ("glb", "obj", "turntable_gif", "thumbnail"):
            assert (out / e["outputs"][key]).is_file(), (e["name"], key)
        assert e["attempts"] == 1 and e["resumed_from"] == 0 and e["seconds"] > 0 and e["finished"]
    # two workers really ran side by side: two distinct worker processes
    assert len({e["worker"]["pid"] for e in jobs}) == 2


def test_rerun_skips_done_jobs_and_retries_failed_only_when_asked(batch4):
    out, prompts = batch4["out"], batch4["prompts"]
    before = manifest(out)
    done = [e for e in before.values() if e["state"] == "done"]
    files = {e["name"]: mtimes(out / e["run_dir"]) for e in done}
    r = run_batch(prompts, out)
    assert r.returncode == 1 and "--retry-failed" in r.stderr
    after = manifest(out)
    assert {n: e["state"] for n, e in after.items()} == {n: e["state"] for n, e in before.items()}
    assert all(after[n]["attempts"] == before[n]["attempts"] for n in before)  # nothing ran again
    r = run_batch(prompts, out, "--retry-failed")
    assert r.returncode == 1
    again = manifest(out)
    bad = next(n for n, e in before.items() if e["state"] == "failed")
    assert again[bad]["attempts"] == 2 and again[bad]["state"] == "failed"
    assert all(again[e["name"]]["attempts"] == 1 for e in done)
    for e in done:  # done jobs were not touched
        assert mtimes(out / e["run_dir"]) == files[e["name"]]


def test_gallery_in_headless_chromium(batch4):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    out = batch4["out"]
    jobs = manifest(out)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            failed_requests = []
            page.on("requestfailed", lambda req: failed_requests.append(req.url))
            page.goto((out / "index.html").as_uri())
            page.wait_for_load_state("load")
            cards = page.locator(".card")
            assert cards.count() == len(jobs) == 4
            shown = {cards.nth(i).get_attribute("data-job"): cards.nth(i).get_attribute("data-state")
                     for i in range(cards.count())}
            assert shown == {n: e["state"] for n, e in jobs.items()}
            bad = next(n for n, e in jobs.items() if e["state"] == "failed")
            assert "unknown word" in page.locator(f'.card[data-job="{bad}"] .error').inner_text()
            # every image decoded, every link points at a file that exists
            page.evaluate("() => Promise.all([...document.images].map(i => i.decode()))")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.src, e.naturalWidth])")
            assert len(images) == 2 * 3  # thumbnail + turntable per done job
            assert all(w > 0 for _, w in images), images
            links = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
            assert sum(1 for h in links if h.endswith(".glb")) == 3
            for url in [u for u, _ in images] + links:
                assert url.startswith("file://") and Path(url[len("file://"):].replace("%20", " ")).is_file(), url
            assert not failed_requests
        finally:
            browser.close()


@pytest.mark.timeout(900)  # a local Ray cluster and two workers: over 300 s on a 2-core machine under load
def test_same_batch_on_local_ray(batch4, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'dream3d[distributed]')")
    out = tmp_path / "ray"
    r = run_batch(batch4["prompts"], out, "--ray", "--workers", "2")
    assert r.returncode == 1, r.stderr
    local, ray = manifest(batch4["out"]), manifest(out)
    assert {n: e["state"] for n, e in ray.items()} == {n: e["state"] for n, e in local.items()}
    for name, e in ray.items():
        if e["state"] == "done":
            assert (out / e["outputs"]["glb"]).is_file() and e["step"] == 6
        else:
            assert e["error"] == local[name]["error"]
    assert (out / "index.html").is_file()


# --- kill -9, Ctrl-C, resume -----------------------------------------------------------------------------------
def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _running_with_checkpoint(out: Path, index: int):
    e = list(manifest(out).values())[index]
    meta = out / e["run_dir"] / "checkpoint" / "meta.json"
    return e if e["state"] == "running" and meta.is_file() and json.loads(meta.read_text())["step"] > 0 else None


def test_sigkill_then_rerun_resumes_from_checkpoint(tmp_path):
    prompts = _jsonl(tmp_path / "jobs.jsonl", [
        {"prompt": "a red cube"},
        {"prompt": "a blue sphere", "steps": 40, "overrides": {"checkpoint_every": 4}},  # the one we kill
        {"prompt": "a green cone", "seed": 2}])
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_cmd(prompts, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        victim = wait_for(lambda: _running_with_checkpoint(out, 1), what="job 2 running with a checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_for(lambda: not pid_alive(victim["worker"]["pid"]), timeout=10, what="the orphaned worker to exit")
    run2 = out / victim["run_dir"]
    killed_at = json.loads((run2 / "checkpoint" / "meta.json").read_text())["step"]
    assert 0 < killed_at < 40
    first = list(manifest(out).values())
    assert [e["state"] for e in first] == ["done", "running", "pending"]  # as the killed batch left it
    done_files = mtimes(out / first[0]["run_dir"])

    r = run_batch(prompts, out)
    assert r.returncode == 0, r.stderr
    jobs = list(manifest(out).values())
    assert [e["state"] for e in jobs] == ["done"] * 3
    assert mtimes(out / jobs[0]["run_dir"]) == done_files  # the done job was not recomputed
    assert jobs[0]["attempts"] == 1
    # the interrupted job started again at its checkpoint, not at step 0
    assert jobs[1]["resumed_from"] == killed_at and jobs[1]["attempts"] == 2 and jobs[1]["step"] == 40
    logged = [json.loads(x)["step"] for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    first_attempt = len(logged) - (40 - killed_at)  # steps the killed attempt logged (some after its checkpoint)
    assert first_attempt >= killed_at
    assert logged == list(range(1, first_attempt + 1)) + list(range(killed_at + 1, 41))
    assert json.loads((run2 / "status.json").read_text())["step"] == 40


def _interruptible_batch(tmp_path: Path, first_steps: int) -> tuple[Path, Path, subprocess.Popen]:
    """(prompts, out, a running `dream3d batch` of a `first_steps`-step job and a short one) that Ctrl-C stops.

    The default SIGINT action is restored first, because a suite started in the background of a non-interactive
    shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    prompts = _jsonl(tmp_path / "jobs.jsonl", [
        {"prompt": "a yellow torus", "steps": first_steps, "overrides": ["checkpoint_every=4"]},
        {"prompt": "a purple cylinder"}])
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_cmd(prompts, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return prompts, out, proc


def test_ctrl_c_stops_cleanly_and_rerun_continues(tmp_path):
    prompts, out, proc = _interruptible_batch(tmp_path, 40)  # Ctrl-C as from a terminal
    try:
        victim = wait_for(lambda: _running_with_checkpoint(out, 0), what="job 1 running with a checkpoint")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert not pid_alive(victim["worker"]["pid"])
    jobs = list(manifest(out).values())
    assert [e["state"] for e in jobs] == ["pending", "pending"]  # nothing left "running"
    assert jobs[0]["note"].startswith("interrupted at step")
    stopped_at = json.loads((out / jobs[0]["run_dir"] / "checkpoint" / "meta.json").read_text())["step"]
    assert jobs[0]["step"] == stopped_at and 0 < stopped_at < 40  # the trainer checkpointed where it stopped
    assert jobs[1]["attempts"] == 0

    # the printed command continues the batch
    hint = [line for line in err.splitlines() if "continue with: dream3d batch" in line]
    assert len(hint) == 1, err
    command = shlex.split(hint[0].split("continue with: ", 1)[1])
    assert command[:3] == ["dream3d", "batch", str(prompts)] and str(out) in command
    r = subprocess.run([sys.executable, "-m", "dream3d.cli", *command[1:]], capture_output=True, text=True, env=ENV,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    jobs = list(manifest(out).values())
    assert [e["state"] for e in jobs] == ["done", "done"]
    assert jobs[0]["resumed_from"] == stopped_at and jobs[0]["note"] == ""


# --- shards ----------------------------------------------------------------------------------------------------
def _listing(prompts, out, *args) -> list[str]:
    r = run_batch(prompts, out, "--dry-run", *args, timeout=120)
    assert r.returncode == 0, r.stderr
    return [line.split("\t")[0] for line in r.stdout.strip().splitlines()]


def test_shards_are_disjoint_and_cover_every_job(tmp_path):
    from dream3d.batch import build_jobs, parse_prompts

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\na blue sphere\na green cone\na yellow torus\na purple wedge\n")
    out = tmp_path / "out"
    full = [j.name for j in build_jobs(parse_prompts(prompts), overrides=TINY, seeds=[0, 1])]
    s0 = _listing(prompts, out, "--seeds", "0,1", "--shard", "0/2")
    s1 = _listing(prompts, out, "--seeds", "0,1", "--shard", "1/2")
    assert len(full) == 10 and len(set(full)) == 10
    assert not set(s0) & set(s1)
    assert sorted(s0 + s1) == sorted(full)
    assert len(s0) == len(s1) == 5
    assert not out.exists()  # a dry run writes nothing


def test_two_shards_share_one_batch_folder(tmp_path):
    """Two array tasks running at the same time into one folder: the manifest ends with both jobs done."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\na blue sphere\n")
    out = tmp_path / "out"
    procs = [subprocess.Popen(batch_cmd(prompts, out, "--shard", f"{i}/2"), env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    jobs = manifest(out)
    assert sorted(e["prompt"] for e in jobs.values()) == ["a blue sphere", "a red cube"]
    assert all(e["state"] == "done" for e in jobs.values())
    assert len({e["worker"]["pid"] for e in jobs.values()}) == 2
    html = (out / "index.html").read_text()
    assert all(f'data-job="{n}" data-state="done"' in html for n in jobs)


def test_two_batches_on_one_folder_never_train_a_job_twice(tmp_path):
    """A second `dream3d batch` on the same folder leaves the job the first one runs to it (one line naming the
    owner) and runs the others; each job's steps are trained once."""
    prompts, out, first = _interruptible_batch(tmp_path, 400)  # its first job still runs at the end
    try:
        owner = wait_for(lambda: _running_with_checkpoint(out, 0), what="job 1 running with a checkpoint")
        second = run_batch(prompts, out)
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    finally:
        first.kill()
    assert second.returncode == 0, second.stderr
    taken = [line for line in second.stderr.splitlines() if "is in use by dream3d batch" in line]
    assert len(taken) == 1 and f"(pid {owner['worker']['pid']} on " in taken[0], second.stderr
    assert len(taken[0]) < 400
    jobs = list(manifest(out).values())
    assert jobs[1]["state"] == "done" and jobs[1]["attempts"] == 1
    assert jobs[1]["worker"]["pid"] != owner["worker"]["pid"]
    assert jobs[0]["state"] == "pending" and jobs[0]["attempts"] == 1  # the first batch's, interrupted by us
    for job in jobs:
        steps = [json.loads(x)["step"] for x in (out / job["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, len(steps) + 1)), job["name"]  # no step twice
    assert len(steps) == 6
