"""A run folder written by an earlier dream3d (flat `guidance.vsd_*` keys; tests/fixtures/README.md) still
resumes exactly, refines, edits and exports."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dream3d.config import load_config

FIXTURES = Path(__file__).parent / "fixtures"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
MESH_SMALL = ["mesh.tet_resolution=16", "mesh.albedo_fit_steps=5", "mesh.carve_views=4", "mesh.carve_resolution=32",
              "render.height=16", "render.width=16", "render.batch_size=1"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dream3d.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)


@pytest.fixture
def old_run(tmp_path) -> Path:
    run = tmp_path / "old_vsd_run"
    shutil.copytree(FIXTURES / "old_vsd_run", run)
    return run


def test_old_config_loads_nested_with_one_notice(old_run, caplog):
    with caplog.at_level(logging.WARNING, logger="dream3d"):
        cfg = load_config(old_run / "config.yaml")
    assert cfg.guidance.method == "vsd" and cfg.guidance.vsd.lora_rank == 1
    assert cfg.guidance.vsd.camera_dropout == 0.1 and cfg.guidance.nfsd.threshold == 0.2
    notices = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(notices) == 1 and "guidance.vsd.lora_rank" in notices[0].getMessage()


def test_old_run_resumes_exactly_as_the_old_version_did(old_run):
    r = cli("generate", "--resume", str(old_run), "--steps", "6")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    expected = json.loads((FIXTURES / "old_vsd_run.resumed.json").read_text())["metrics"]
    for got, want in zip(rows[4:], expected):
        assert got["t"] == want["t"]  # the guidance RNG state resumed
        for key in ("loss", "lora_loss", "grad_norm", "opacity"):  # φ, its AdamW, the NeRF and Adam resumed
            assert got[key] == pytest.approx(want[key], rel=1e-4), key


def test_old_run_refines_edits_and_exports(old_run, tmp_path):
    mesh = tmp_path / "mesh"
    r = cli("refine", str(old_run), "--steps", "2", "--out", str(mesh), "guidance.method=sds", *MESH_SMALL,
            "export.enabled=true", "export.turntable=false", "export.texture_size=64")
    assert r.returncode == 0, r.stderr
    cfg = load_config(mesh / "config.yaml")
    assert cfg.stage == "mesh" and Path(cfg.init_from) == old_run.resolve()
    assert json.loads((mesh / "init.json").read_text())["faces"] > 0
    assert (mesh / "export" / "model.glb").stat().st_size > 0

    edit = tmp_path / "edit"
    r = cli("edit", str(old_run), "--prompt", "a blue cube", "--steps", "2", "--out", str(edit),
            "export.enabled=false")
    assert r.returncode == 0, r.stderr
    cfg = load_config(edit / "config.yaml")
    assert (cfg.guidance.method, cfg.guidance.dds.source_prompt, cfg.prompt) == ("dds", "a red cube", "a blue cube")

    r = cli("export", str(old_run), "--resolution", "48", "--texture", "64", "--no-turntable")
    assert r.returncode == 0, r.stderr
    record = json.loads((old_run / "export" / "export.json").read_text())
    assert record["stats"]["faces"] > 0 and (old_run / record["files"]["glb"]).is_file()  # relative to the run

    stamp = (old_run / "export" / "export.json").stat().st_mtime_ns
    r = cli("generate", "--resume", str(old_run))  # finished and exported: nothing to redo
    assert r.returncode == 0 and "already finished at step 4" in r.stderr and "dream3d export" in r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(old_run)
    assert (old_run / "export" / "export.json").stat().st_mtime_ns == stamp
