"""The built wheel on its own: installed into a fresh venv outside the source tree, it generates, refines and edits
with its shipped recipes, and builds the C++ hash-grid kernel from its installed sources.

The venv gets torch from `pip install torch==2.13.0` (the CPU wheel the README installs first) and the other
dependencies from the package index, as a user's `pip install dream3d-*.whl` would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TORCH = os.environ.get("DREAM3D_TEST_TORCH", "torch==2.13.0")
# what a source checkout has that is not part of the project's source
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "outputs", ".cache", "__pycache__",
                                    "*.egg-info", ".pytest_cache", "scratch", ".whl", ".gl")
SMALL = ["geometry.n_levels=4", "geometry.log2_hashmap_size=12", "geometry.mlp_width=16", "render.height=16",
         "render.width=16", "render.batch_size=2", "render.samples_per_ray=24", "preview_every=100",
         "export.enabled=false", "device=cpu"]
MESH_SMALL = ["mesh.tet_resolution=16", "mesh.albedo_fit_steps=2", "mesh.carve_views=4", "mesh.carve_resolution=16",
              "render.height=16", "render.width=16", "render.batch_size=1", "export.enabled=false"]
EDIT_SMALL = ["render.batch_size=1", "export.enabled=false"]  # the rest comes from the source run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(args: list, env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs `args` in `cwd`; a non-zero exit fails the test with the command and the ends of its output."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    command = " ".join(str(a) for a in args)
    assert r.returncode == 0, f"{command} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _saved_config(run_dir: Path) -> dict:
    """The resolved config a run saved in its folder, as plain YAML data."""
    return yaml.safe_load((run_dir / "config.yaml").read_text())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(environment, empty work folder, venv) of a fresh venv with the wheel built from this checkout in it."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)  # a clean copy: no stale build/ leaks into the wheel
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DREAM3D_", "VIRTUAL_ENV"))}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src], env, tmp)
    wheel, = (tmp / "dist").glob("dream3d-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], env, tmp)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", TORCH, wheel], env, tmp, timeout=900)
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), OMP_NUM_THREADS="1",
               DREAM3D_EXT_CACHE=str(tmp / "ext-cache"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    work = tmp / "work"
    work.mkdir()
    yield env, work, venv
    shutil.rmtree(venv, ignore_errors=True)  # about 1.6 GB, torch included


def test_the_installed_package_is_not_the_checkout(installed):
    env, work, venv = installed
    code = ("import dream3d, dream3d.recipes as r; print(dream3d.__file__); print(r.recipe_path('mesh')); "
            "print(r.kernel_source_dir())")
    lines = _run([venv / "bin" / "python", "-c", code], env, work).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in lines), lines
    assert Path(lines[1]).read_text() == (ROOT / "configs" / "mesh.yaml").read_text()


def test_generate_refine_edit_apply_their_recipes_and_build_the_kernel(installed):
    env, work, venv = installed
    cache = Path(env["DREAM3D_EXT_CACHE"])
    assert not cache.exists()
    nerf, mesh, edit = work / "cube", work / "cube-mesh", work / "cube-blue"
    # --config NAME: the shipped nfsd recipe (guidance_scale 7.5 where the schema says 10); cpp: no torch fallback
    r = _run(["dream3d", "-v", "generate", "a red cube", "--config", "nfsd", "--steps", "3", "--out", nerf, *SMALL,
              "geometry.encoding_backend=cpp"], env, work)
    assert "hash-grid encoding uses backend 'cpp' on cpu" in r.stderr
    cfg = _saved_config(nerf)
    assert cfg["guidance"]["method"] == "nfsd" and cfg["guidance"]["guidance_scale"] == 7.5 and cfg["steps"] == 3
    build, = cache.glob("dream3d_hashgrid_cpu-*")
    assert (build / "dream3d_hashgrid_cpu.so").is_file()
    installed_src = venv.glob("lib/python*/site-packages/dream3d/extensions/hashgrid/hashgrid_cpu.cpp")
    assert str(next(installed_src)) in (build / "build.ninja").read_text()

    _run(["dream3d", "refine", nerf, "--steps", "2", "--out", mesh, *MESH_SMALL], env, work)
    cfg = _saved_config(mesh)  # configs/mesh.yaml: t_max 0.5 constant, no shading warm-up (schema: 0.98, step, 100)
    assert cfg["stage"] == "mesh" and cfg["steps"] == 2
    assert (cfg["guidance"]["t_max"], cfg["guidance"]["t_schedule"]) == (0.5, "constant")
    assert cfg["render"]["shading_warmup_steps"] == 0 and cfg["mesh"]["tet_resolution"] == 16

    _run(["dream3d", "edit", nerf, "--prompt", "a blue cube", "--steps", "2", "--out", edit, *EDIT_SMALL], env, work)
    cfg = _saved_config(edit)  # configs/dds-edit.yaml: lr 0.003, uniform weighting, t_max 0.95 (schema: 0.01, sds)
    assert cfg["guidance"]["method"] == "dds" and cfg["optim"]["lr"] == 0.003
    assert (cfg["guidance"]["weighting"], cfg["guidance"]["t_max"]) == ("uniform", 0.95)
