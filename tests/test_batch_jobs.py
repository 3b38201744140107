"""Batch job lists without generating anything: parsing, per-job settings, names, shards, manifest, user errors."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dream3d.batch import build_jobs, parse_prompts, parse_seeds, parse_shard, shard_jobs
from dream3d.batch.manifest import Manifest, new_entry
from dream3d.batch.run import BatchOptions, run_batch
from dream3d.errors import ConfigError, Dream3DError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_text_file_skips_comments_and_blank_lines(tmp_path):
    specs = parse_prompts(write(tmp_path / "p.txt", "# header\na red cube\n\n   \n  # indented comment\n"
                                                    "  a blue sphere  \n"))
    assert [s.prompt for s in specs] == ["a red cube", "a blue sphere"]
    assert [s.where for s in specs] == ["p.txt:2", "p.txt:6"]


def test_jsonl_per_job_settings_resolve_in_order(tmp_path):
    cfg = write(tmp_path / "vsd.yaml", "guidance:\n  method: vsd\n  guidance_scale: 3.0\nsteps: 50\n")
    specs = parse_prompts(write(tmp_path / "p.jsonl", "\n".join([
        json.dumps({"prompt": "a red cube"}),
        json.dumps({"prompt": "a blue sphere", "seed": 7, "steps": 12, "method": "nfsd",
                    "overrides": {"guidance.guidance_scale": 2.5, "guidance.negative_prompt": "blurry"}}),
        json.dumps({"prompt": "a green cone", "config": "vsd.yaml", "overrides": ["optim.lr=0.002"]}),
    ])))
    jobs = build_jobs(specs, overrides=["steps=30", "guidance.guidance_scale=9"], seeds=[0, 1],
                      prompts_dir=tmp_path)
    # a job's own seed wins over --seeds; the others run once per seed
    assert [(j.prompt, j.seed) for j in jobs] == [("a red cube", 0), ("a red cube", 1), ("a blue sphere", 7),
                                                 ("a green cone", 0), ("a green cone", 1)]
    red, blue, cone = jobs[0].cfg, jobs[2].cfg, jobs[3].cfg
    assert (red.steps, red.guidance.method, red.guidance.guidance_scale) == (30, "sds", 9.0)
    assert (blue.steps, blue.seed, blue.guidance.method) == (12, 7, "nfsd")
    assert blue.guidance.guidance_scale == 2.5 and blue.guidance.negative_prompt == "blurry"
    # the job's config file (found next to the prompts file) replaces the defaults; batch overrides still apply
    assert (cone.guidance.method, cone.steps, cone.guidance.guidance_scale, cone.optim.lr) == ("vsd", 30, 9.0, 0.002)
    assert [j.index for j in jobs] == list(range(5))


def test_job_names_are_deterministic_and_follow_the_settings(tmp_path):
    specs = parse_prompts(write(tmp_path / "p.txt", "a red cube\na red cube\nA Red  Cube!\n"))
    a = build_jobs(specs, overrides=["steps=10"])
    b = build_jobs(specs, overrides=["steps=10"])
    assert [j.name for j in a] == [j.name for j in b]
    # the exact duplicate is dropped; a different spelling is a different prompt (and job)
    assert len(a) == 2 and a[0].name.startswith("a-red-cube-s0-") and a[1].name.startswith("a-red-cube-s0-")
    assert a[0].name != a[1].name
    c = build_jobs(specs, overrides=["steps=11"])
    assert c[0].name != a[0].name and c[0].name.rsplit("-", 1)[0] == a[0].name.rsplit("-", 1)[0]
    d = build_jobs(specs, overrides=["steps=10"], seeds=[3])
    assert d[0].name.startswith("a-red-cube-s3-")


def test_invalid_job_settings_fail_that_job_only(tmp_path):
    specs = parse_prompts(write(tmp_path / "p.jsonl", "\n".join([
        json.dumps({"prompt": "a red cube"}),
        json.dumps({"prompt": "a blue sphere", "overrides": ["guidance.guidance_scal=3"]}),
        json.dumps({"prompt": "a green cone", "steps": -5}),
    ])))
    jobs = build_jobs(specs)
    assert [bool(j.error) for j in jobs] == [False, True, True]
    assert "p.jsonl:2" in jobs[1].error and "did you mean 'guidance.guidance_scale'" in jobs[1].error
    assert "p.jsonl:3" in jobs[2].error and "'steps' must be in [1, 1000000]" in jobs[2].error
    assert jobs[1].cfg is None and jobs[1].name.startswith("a-blue-sphere-s0-")


def test_unresolvable_job_is_recorded_failed_without_running(tmp_path):
    prompts = write(tmp_path / "p.jsonl", json.dumps({"prompt": "a red cube", "overrides": ["render.heigth=8"]}))
    out = tmp_path / "out"
    code = run_batch(BatchOptions(prompts=str(prompts), out=str(out)), live=False)
    assert code == 1
    (entry,) = json.loads((out / "batch.json").read_text())["jobs"]
    assert entry["state"] == "failed" and entry["attempts"] == 0
    assert "unknown config key 'render.heigth'" in entry["error"]
    assert 'data-state="failed"' in (out / "index.html").read_text()


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a red cube", "sed": 1}', "unknown key 'sed'; did you mean 'seed'?"),
    ('{"prompt": "a red cube", "steps": "many"}', "'steps' must be an integer"),
    ('{"prompt": ""}', "needs a non-empty \"prompt\""),
    ('{"prompt": "a red cube",', "invalid JSON"),
    ('{"prompt": "a red cube", "overrides": 3}', "'overrides' must be a list"),
])
def test_jsonl_mistakes_name_the_line(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", '{"prompt": "a red cube"}\n' + line + "\n")
    with pytest.raises(ConfigError) as e:
        parse_prompts(path)
    assert "p.jsonl:2" in str(e.value) and message in str(e.value)


def test_batch_wide_mistakes_stop_before_anything_runs(tmp_path):
    specs = parse_prompts(write(tmp_path / "p.txt", "a red cube\n"))
    with pytest.raises(ConfigError, match="guidance.guidance_scale"):
        build_jobs(specs, overrides=["guidance_scale=3"])
    with pytest.raises(Dream3DError, match="holds no prompts"):
        parse_prompts(write(tmp_path / "empty.txt", "# nothing\n\n"))


def test_shard_partition_is_disjoint_covering_and_balanced(tmp_path):
    specs = parse_prompts(write(tmp_path / "p.txt", "\n".join(f"a red cube {'!' * i}" for i in range(7))))
    jobs = build_jobs(specs, seeds=[0, 1])
    assert len(jobs) == 14
    for n in (1, 2, 3, 5):
        shards = [shard_jobs(jobs, (i, n)) for i in range(n)]
        names = [j.name for s in shards for j in s]
        assert sorted(names) == sorted(j.name for j in jobs) and len(set(names)) == len(jobs)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # appending prompts never moves an existing job to another shard
    more = build_jobs(parse_prompts(write(tmp_path / "q.txt", (tmp_path / "p.txt").read_text() + "\na blue cube")),
                      seeds=[0, 1])
    assert [j.name for j in shard_jobs(jobs, (1, 3))] == [j.name for j in shard_jobs(more, (1, 3))][:5]


def test_seed_and_shard_arguments():
    assert parse_seeds("0, 1,1,5") == [0, 1, 5] and parse_seeds(None) is None
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(Dream3DError):
            parse_shard(bad)
    with pytest.raises(Dream3DError):
        parse_seeds("0,x")


def test_manifest_merge_keeps_other_processes_entries(tmp_path):
    specs = parse_prompts(write(tmp_path / "p.txt", "a red cube\na blue sphere\n"))
    a, b = build_jobs(specs)
    m = Manifest(tmp_path / "out")
    m.merge([new_entry(a), new_entry(b)], add_only=True)
    m.merge([{**new_entry(b), "state": "done"}])  # another shard finished b
    m.merge([new_entry(a), new_entry(b)], add_only=True)  # a late shard registers the jobs again
    m.merge([{**new_entry(a), "state": "running"}])
    assert {e["name"]: e["state"] for e in m.read()["jobs"]} == {a.name: "running", b.name: "done"}
    assert [e["name"] for e in m.read()["jobs"]] == [a.name, b.name]
    assert not list((tmp_path / "out").glob("*.tmp*"))


@pytest.mark.parametrize("args, message", [
    (["missing.txt"], "prompts file not found"),
    (["{p}", "--shard", "2/2"], "--shard 2/2"),
    (["{p}", "--workers", "0"], "--workers must be at least 1"),
    (["{p}", "--seeds", "a"], "--seeds takes"),
    (["{p}", "guidance.scale=3"], "unknown config key 'guidance.scale'"),
    (["{p}", "extra-word"], "unexpected argument 'extra-word'"),
])
def test_cli_mistakes_are_one_line(tmp_path, capsys, args, message):
    from dream3d.cli import main

    p = write(tmp_path / "p.txt", "a red cube\n")
    code = main(["batch", *[a.format(p=p) for a in args], "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("dream3d: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_cli_exit_status_for_a_mistake_in_a_real_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dream3d.cli", "batch", str(tmp_path / "none.txt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"dream3d: error: prompts file not found: {tmp_path / 'none.txt'}"


@pytest.mark.slow
def test_jobs_of_one_worker_share_its_prior_and_give_the_same_result(tmp_path):
    """run_job in-process: events, outputs, and a reused prior changes nothing."""
    import torch
    from safetensors.torch import load_file

    from dream3d.batch import worker

    tiny = ["steps=4", "checkpoint_every=2", "device=cpu", "geometry.n_levels=4", "geometry.log2_hashmap_size=12",
            "geometry.mlp_width=16", "render.batch_size=1", "render.samples_per_ray=24", "export.enabled=false"]
    (job,) = build_jobs(parse_prompts(write(tmp_path / "p.txt", "a red cube\n")), overrides=tiny)
    worker._prior_cache.clear()
    runs, priors = {}, []
    for name in ("first", "second", "fresh"):
        if name == "fresh":
            worker._prior_cache.clear()
        events = []
        result = worker.run_job(job, tmp_path / name, events.append)
        assert result["state"] == "done", result
        assert [e["type"] for e in events][:2] == ["started", "training"] and events[-1] is result
        assert {e["type"] for e in events} <= {"started", "training", "progress", "checkpoint", "finished"}
        priors.append(next(iter(worker._prior_cache.values())))
        runs[name] = load_file(str(tmp_path / name / "checkpoint" / "tensors.safetensors"))
        assert Path(result["outputs"]["thumbnail"]).is_file()
    assert priors[0] is priors[1] and priors[2] is not priors[0]
    from PIL import Image
    assert Image.open(tmp_path / "first" / "thumbnail.png").size == (worker.THUMBNAIL_SIZE, worker.THUMBNAIL_SIZE)
    for name in ("second", "fresh"):
        for k, v in runs["first"].items():
            if k.startswith("renderer."):
                torch.testing.assert_close(runs[name][k], v, rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")


def test_live_table_fits_the_terminal():
    from rich.console import Console

    from dream3d.batch.progress import LiveTable

    entries = {
        "a-red-cube-s0-a1a5acc4": {"name": "a-red-cube-s0-a1a5acc4", "state": "running", "step": 3, "steps": 600,
                                   "seconds": 12.0, "index": 0, "error": ""},
        "a-hamburger-s0-a3d32cb3": {"name": "a-hamburger-s0-a3d32cb3", "state": "failed", "step": 0, "steps": 6,
                                    "seconds": 1.0, "index": 1, "error": "unknown word 'hamburger' " * 10},
        "a-blue-cube-s0-00000000": {"name": "a-blue-cube-s0-00000000", "state": "pending", "index": 2}}
    table = LiveTable(entries, live=False)
    assert table.summary() == "3 jobs: 0 done, 1 failed, 1 running, 1 pending"
    for width in (80, 160):
        console = Console(width=width, file=io.StringIO())
        console.print(table.render(width))
        text = console.file.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        for word in ("a-red-cube-s0-a1a5acc4", "a-hamburger-s0-a3d32cb3", "running", "failed", "3/600"):
            assert word in text, (width, text)
        assert "a-blue-cube" not in text  # pending jobs are only counted
