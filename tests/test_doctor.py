"""`dream3d doctor`: the verdict and exit status with the kernels built, disabled (`DREAM3D_NO_EXT=1`) and broken,
`--require`, and the kernel cache's free disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dream3d import doctor
from dream3d.cli import main
from dream3d import native
from dream3d.encoding import backends

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    if "DREAM3D_NO_EXT" not in env:
        full_env.pop("DREAM3D_NO_EXT", None)
    return subprocess.run([sys.executable, "-m", "dream3d.cli", "doctor", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=600)


def verdict_of(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("verdict: ")]
    assert len(lines) == 1, stdout
    return lines[0]


def sections(stdout: str) -> dict[str, dict[str, str]]:
    """{section title: {label: text}} of the report (titles unindented, rows indented by two spaces)."""
    out: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        if line.startswith("  "):
            label, _, text = line.strip().partition("  ")
            out[title][label] = text.strip()
        elif not line.startswith("verdict: "):
            title = line
            out[title] = {}
    return out


GRID = "hash grid (geometry.encoding_backend=auto)"


@pytest.fixture
def fresh_checks():
    if native.extensions_disabled():
        pytest.skip("DREAM3D_NO_EXT is set")
    assert native.load("hashgrid", "cpu") is not None, native.load_error("hashgrid", "cpu")
    backends.reset_self_checks()
    yield native.load("hashgrid", "cpu")
    backends.reset_self_checks()


def test_doctor_with_the_kernels_built():
    if native.extensions_disabled():
        pytest.skip("DREAM3D_NO_EXT is set")
    done = run_cli("--require", "cpp")
    assert done.returncode == 0, done.stdout + done.stderr
    report = sections(done.stdout)
    assert report["system"]["torch"].startswith(torch.__version__)
    assert report[GRID]["auto on cpu"] == "cpp"
    assert report[GRID]["cpp kernel"].startswith("built; self-check passed (max error")
    if NO_CUDA:  # on a GPU machine the verdict also depends on nerfacc / nvdiffrast being installed
        assert verdict_of(done.stdout) == "verdict: OK: every piece uses its fast backend on cpu"
        assert report[GRID]["cuda kernel"] == "not usable: no CUDA device"
        assert report["ray marching (render.backend=auto)"]["auto on cuda"] == "no CUDA device"


def test_doctor_with_the_kernels_disabled():
    done = run_cli(DREAM3D_NO_EXT="1")
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = verdict_of(done.stdout)
    assert verdict.startswith("verdict: DEGRADED (runs, slower): the hash grid uses the torch fallback on cpu "
                              "(C++ kernel not built: disabled by DREAM3D_NO_EXT)")
    if NO_CUDA:
        assert verdict.endswith("DREAM3D_NO_EXT)")  # nothing else falls back
    assert sections(done.stdout)[GRID]["auto on cpu"] == "torch"
    required = run_cli("--require", "cpp", DREAM3D_NO_EXT="1")
    assert required.returncode == 1, required.stdout + required.stderr
    verdict = verdict_of(required.stdout)
    assert verdict.startswith("verdict: FAIL: required backend 'cpp' not built: disabled by DREAM3D_NO_EXT")
    assert "torch fallback on cpu" in verdict
    assert required.stderr == ""  # nothing but the report: no traceback, no warnings


def test_broken_kernel_fails_a_requirement(fresh_checks, monkeypatch, capsys):
    original = fresh_checks.forward
    monkeypatch.setattr(fresh_checks, "forward", lambda *args: original(*args) * 1.1)
    assert doctor.run_doctor(["cpp"]) == doctor.EXIT_REQUIRED_MISSING
    out = capsys.readouterr().out
    verdict = verdict_of(out)
    assert verdict.startswith("verdict: FAIL: required backend 'cpp' built; self-check FAILED (max error")
    assert "the hash grid uses the torch fallback on cpu" in verdict
    assert sections(out)[GRID]["auto on cpu"] == "torch"
    assert doctor.run_doctor([]) == 0  # not required: a degraded install still runs
    assert verdict_of(capsys.readouterr().out).startswith("verdict: DEGRADED (runs, slower): the hash grid uses")


@pytest.mark.skipif(not NO_CUDA, reason="on a CPU-only machine")
@pytest.mark.parametrize("name", ["cuda", "tcnn", "nerfacc", "nvdiffrast"])
def test_cuda_backends_are_missing_without_a_gpu(name, capsys):
    assert doctor.run_doctor([name]) == 1
    verdict = verdict_of(capsys.readouterr().out)
    assert verdict.startswith(f"verdict: FAIL: required backend '{name}' ")
    assert "no CUDA device" in verdict or "not installed" in verdict


def test_unknown_requirement_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--require", "vulkan"])
    assert info.value.code == 2 and "invalid choice: 'vulkan'" in capsys.readouterr().err
    with pytest.raises(doctor.Dream3DError, match="unknown backend 'vulkan'"):
        doctor.run_doctor(["vulkan"])


def test_kernel_cache_free_disk(fresh_checks, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DREAM3D_EXT_CACHE", str(tmp_path / "not" / "yet"))
    d = doctor.diagnose()
    assert abs(d.cache_free_bytes - shutil.disk_usage(tmp_path).free) < 2**30
    report = sections(d.render())["kernel cache"]
    assert report["folder"] == f"{tmp_path / 'not' / 'yet'} (not created yet; on {tmp_path})"
    assert report["free"] == f"{d.cache_free_bytes / 2**30:.1f} GiB"
    monkeypatch.setattr(doctor, "LOW_DISK_BYTES", d.cache_free_bytes + 2**40)
    verdict, ok = doctor.diagnose().verdict()
    assert ok and "are free for the kernel cache" in verdict and verdict.startswith("DEGRADED")
