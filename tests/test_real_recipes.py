"""Recipes for real priors: the recipe follows the prior's kind, the guidance scale the prior's default unless set,
and every shipped sd-/if- recipe validates and runs on tiny SD-style and IF-style priors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dream3d.config import load_config
from dream3d.pipeline import generation_config, mesh_stage_config, recipe_for_prior
from dream3d.recipes import recipe_names, recipe_path
from dream3d.trainer import Trainer
from tiny_models import save_tiny_bundled, save_tiny_if, save_tiny_sd

REAL = sorted(n for n in recipe_names() if n.startswith(("sd-", "if-")))
SMALL = ["steps=2", "render.samples_per_ray=32", "geometry.log2_hashmap_size=12", "geometry.n_levels=4",
         "export.enabled=false", "device=cpu", "checkpoint_every=1", "preview_every=2"]
MESH_SMALL = ["render.height=32", "render.width=32", "mesh.tet_resolution=16", "mesh.albedo_fit_steps=5",
              "mesh.carve_views=4", "mesh.carve_resolution=32"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    return {"sd": save_tiny_sd(root / "sd"), "if": save_tiny_if(root / "if"), "shapes": save_tiny_bundled(root / "b")}


def test_the_recipe_follows_the_prior_kind(folders):
    cfg, line = generation_config(None, [f"prior={folders['sd']}"])
    assert "recipe sd-sds" in line and "latent" in line
    assert (cfg.guidance.guidance_scale, cfg.render.height, cfg.render.width, cfg.steps) == (101.0, 64, 64, 10000)
    cfg, line = generation_config(None, [f"prior={folders['if']}"])
    assert "recipe if-sds" in line and "pixel" in line and cfg.guidance.guidance_scale == 21.0
    cfg, line = generation_config(None, [])
    assert "recipe cpu-default" in line and cfg == load_config(None, [])  # the CPU default is the schema's
    cfg, line = generation_config(None, [f"prior={folders['shapes']}"])
    assert "recipe cpu-default" in line
    cfg, _ = generation_config(None, [f"prior={folders['sd']}", "guidance.method=vsd"])
    assert cfg.guidance.method == "vsd" and cfg.steps == 25000 and cfg.guidance.guidance_scale == 7.5  # sd-vsd
    cfg, _ = generation_config(None, [f"prior={folders['sd']}", "guidance.method=dds"])
    assert cfg.guidance.method == "dds" and cfg.guidance.guidance_scale == 101.0  # no sd-dds: sd-sds, method kept
    assert recipe_for_prior("pixel", "vsd") == "if-sds" and recipe_for_prior("shapes", "vsd") == "cpu-default"


def test_an_unset_scale_is_the_prior_default_and_a_set_one_wins(folders, tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("steps: 7\n")
    cfg, line = generation_config(plain, [f"prior={folders['sd']}"])
    assert cfg.guidance.guidance_scale == 101.0 and "the prior's default" in line and cfg.steps == 7
    cfg, _ = generation_config(plain, [f"prior={folders['if']}"])
    assert cfg.guidance.guidance_scale == 21.0
    cfg, line = generation_config(plain, [f"prior={folders['sd']}", "guidance.guidance_scale=42"])
    assert cfg.guidance.guidance_scale == 42.0 and "default" not in line
    cfg, _ = generation_config("sds", [f"prior={folders['sd']}"])  # the shapes-world sds recipe states its 10
    assert cfg.guidance.guidance_scale == 10.0


@pytest.mark.parametrize("name", REAL)
def test_every_real_prior_recipe_runs_two_steps_on_a_tiny_prior(name, folders, tmp_path):
    recipe = yaml.safe_load(recipe_path(name).read_text())
    assert "commit" in recipe_path(name).read_text() or "arXiv" in recipe_path(name).read_text()  # its source
    kind = "if" if name.startswith("if-") else "sd"
    cfg = load_config(recipe_path(name), [f"prior={folders[kind]}", *SMALL])
    assert cfg.prior == str(folders[kind]) and recipe["prior"] != str(folders[kind])
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.train(handle_signals=False) == "done" and trainer.step == 2
    if cfg.mesh.refine_steps > 0:  # the recipe's mesh-stage overrides validate; the stage runs a step, smaller
        mesh_cfg = mesh_stage_config(tmp_path / "run", overrides=MESH_SMALL, steps=1)
        assert mesh_cfg.stage == "mesh" and mesh_cfg.mesh.normal_consistency == 10000.0
        mesh = Trainer(mesh_cfg, tmp_path / "run-mesh", prior=trainer.prior)
        assert mesh.train(handle_signals=False) == "done"


def test_generate_without_config_saves_the_sd_recipe_and_says_so(folders, tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "dream3d.cli", "generate", "a hamburger", "--prior", str(folders["sd"]),
                        "--steps", "1", "--out", str(run), "render.samples_per_ray=16", "geometry.n_levels=4",
                        "geometry.log2_hashmap_size=12", "export.enabled=false"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "recipe sd-sds" in r.stderr
    saved = load_config(run / "config.yaml")
    assert (saved.guidance.guidance_scale, saved.render.height, saved.render.width) == (101.0, 64, 64)
    assert saved.prior == str(folders["sd"]) and saved.camera.distance_range == [1.5, 2.0]


def test_the_app_and_batch_pick_the_same_recipes(folders, tmp_path):
    from dream3d.app import forms
    from dream3d.app.policy import PagePolicy
    from dream3d.batch.jobs import build_jobs, parse_prompts

    offered = PagePolicy(allowed_priors=(str(folders["sd"]),))  # python app.py --allow-prior FOLDER
    cfg = forms.generate_config("a hamburger", "sds", str(folders["sd"]), policy=offered)
    assert (cfg.guidance.guidance_scale, cfg.render.height, cfg.steps) == (101.0, 64, 10000)
    assert forms.method_config("vsd", str(folders["sd"]), offered).steps == 25000  # sd-vsd
    assert forms.method_config("sds", "").guidance.guidance_scale == 10.0  # configs/sds.yaml, bundled
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(f'{{"prompt": "a hamburger", "prior": "{folders["if"]}"}}\n{{"prompt": "a red cube"}}\n')
    jobs = build_jobs(parse_prompts(prompts), seeds=[0], prompts_dir=tmp_path)
    assert [j.cfg.guidance.guidance_scale for j in jobs] == [21.0, 10.0]
    assert jobs[0].cfg.render.height == 64 and jobs[1].cfg == _with(load_config(None, ["seed=0"]), "a red cube")


def _with(cfg, prompt):
    cfg.prompt, cfg.name = prompt, ""
    return cfg


def test_the_generate_tab_fills_steps_and_scale_from_the_prior_kind_recipe(folders):
    gr = pytest.importorskip("gradio")
    from dream3d.app.policy import PagePolicy
    from dream3d.app.ui import Handlers

    h = Handlers(Path("unused-outputs"), None, None, 0.5, PagePolicy((str(folders["sd"]),)))  # --allow-prior
    assert h.recipe_defaults("sds", str(folders["sd"])) == (10000, 101.0)
    assert h.recipe_defaults("vsd", str(folders["sd"])) == (25000, 7.5)
    assert h.recipe_defaults("sds", "") == (1200, 10.0)
    unchanged = Handlers(Path("unused-outputs"), None, None, 0.5).recipe_defaults("sds", str(folders["sd"]))
    assert unchanged == (gr.skip(), gr.skip())  # not offered: the fields are left as they are
