"""Full-size priors on the CPU: Stable Diffusion 2.1-base and DeepFloyd IF-I-M architectures with random weights.

The folders are built from the published config values (`tiny_models.save_sd21_base_random`,
`tiny_models.save_if_i_m_random`, which name their sources), saved in diffusers layout (fp16), loaded through
`dream3d.priors.load_prior`, checked for the shapes and dtypes of the real models (512 px images -> 4x64x64 latents
and 77x1024 CLIP states for SD; 3x64x64 pixels and 77x4096 T5 states for IF, whose UNet's learned-variance channels
are dropped), and stepped by `dream3d.pipeline.run_generation` with the SD and IF recipes (`sd-sds` 2 steps,
`sd-vsd` 1 step, `if-sds` 2 steps; the shipped recipe when it exists, else its settings as overrides) at their
64x64 renders. Each test prints its wall time and peak RSS (reset per test where Linux allows). The SD text
encoder has the published 23 layers; the IF T5 has 1 layer of the real width (4096): text states are encoded once
per prompt and cached, and the width is what the UNet sees. Weights are random: only shapes, dtypes, plumbing,
time and memory mean something. Run with `pytest -m slow tests/test_full_size.py`: 4.4 minutes on a 2-core CPU
(7.5 when three other jobs shared it), peak RSS 10.6 GiB (the VSD step).
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dream3d.pipeline import run_generation
from dream3d.priors import load_prior
from dream3d.run_folder import RunFolder
from tiny_models import (QUIET_RUN, full_size_config, peak_rss_gib, release_memory, reset_peak_rss,
                         save_if_i_m_random, save_sd21_base_random)

GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"

SMALL_GRID = ["geometry.log2_hashmap_size=16"]  # the prior's time is what is measured, not the grid's init
FIGURES: list[str] = []  # one line per measured piece, printed again at the end of the module


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Print `line` to the terminal past pytest's capture and keep it for the module's summary."""
    FIGURES.append(line)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n[full-size] {line}", flush=True)


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    if not FIGURES:
        return
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n[full-size] summary (CPU, {torch.get_num_threads()} threads):\n  " + "\n  ".join(FIGURES))


@pytest.fixture(autouse=True)
def measured(request):
    """Wall time and peak RSS of each slow test (the class fixtures' build and load are measured by themselves)."""
    if request.node.get_closest_marker("slow") is None:
        yield
        return
    release_memory()
    exact = reset_peak_rss()
    t0 = time.perf_counter()
    yield
    name = f"{request.node.cls.__name__}.{request.node.name}" if request.node.cls else request.node.name
    report(request, f"{name}: {time.perf_counter() - t0:.1f} s wall, peak RSS {peak_rss_gib():.2f} GiB"
                    + ("" if exact else " (process peak)"))


def built_and_loaded(request, tmp_path_factory, name: str, build):
    """Build a folder with `build(folder)`, load it with load_prior; yields (folder, prior); removes the folder."""
    folder = tmp_path_factory.mktemp(name)
    release_memory()
    reset_peak_rss()
    t0 = time.perf_counter()
    build(folder / "prior")
    t_build = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (folder / "prior").rglob("*") if f.is_file()) / 2**30
    t0 = time.perf_counter()
    prior = load_prior(folder / "prior")
    report(request, f"{name}: built in {t_build:.1f} s ({size:.2f} GiB fp16 on disk), loaded in "
                    f"{time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_gib():.2f} GiB")
    try:
        yield folder / "prior", prior
    finally:
        del prior
        shutil.rmtree(folder, ignore_errors=True)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Recorder:
    """Wraps a prior's encode_images and eps to record the shapes and dtypes the guidance hands it, and the
    gradient that reaches the render."""

    def __init__(self, monkeypatch, prior):
        self.images: list[tuple] = []  # (rgb shape, x0 shape, x0 dtype)
        self.eps: list[tuple] = []  # (x_t shape, t shape, emb shape, eps shape, eps dtype)
        self.render_grads: list[float] = []
        encode, eps = prior.encode_images, prior.eps

        def encode_images(rgb):
            x0 = encode(rgb)
            self.images.append((tuple(rgb.shape), tuple(x0.shape), x0.dtype))
            if rgb.requires_grad:
                rgb.register_hook(lambda g: self.render_grads.append(float(g.norm())))
            return x0

        def eps_rec(x_t, t, emb, cameras=None):
            out = eps(x_t, t, emb, cameras)
            self.eps.append((tuple(x_t.shape), tuple(torch.as_tensor(t).shape), tuple(emb.shape), tuple(out.shape),
                             out.dtype, bool(torch.isfinite(out).all())))
            return out

        monkeypatch.setattr(prior, "encode_images", encode_images)
        monkeypatch.setattr(prior, "eps", eps_rec)


def run_recipe(request, tmp_path, prior, folder, recipe: str, steps: int, extra: list[str] = ()):
    """`steps` steps of `recipe` through run_generation with the loaded prior; returns (generation, metrics)."""
    cfg, source = full_size_config(recipe, folder, steps, extra=QUIET_RUN + SMALL_GRID + list(extra))
    gen = run_generation(cfg, RunFolder(tmp_path / "run"), prior=prior, handle_signals=False)
    metrics = [json.loads(line) for line in gen.run.metrics.read_text().splitlines()]
    seconds = [m["seconds"] for m in metrics]
    per_step = [b - a for a, b in zip([0.0] + seconds, seconds)]
    report(request, f"{recipe} ({source}): seconds per step " + ", ".join(f"{s:.1f}" for s in per_step))
    return gen, metrics


def assert_steps(gen, metrics, steps: int, scale: float) -> None:
    assert gen.state == "done" and gen.trainer.step == steps and gen.exported is None
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    for m in metrics:
        assert math.isfinite(m["loss"]) and m["grad_norm"] > 0 and math.isfinite(m["grad_norm"])
        assert m["guidance_scale"] == scale


@pytest.fixture(scope="class")  # class scope: freed before the IF tests load theirs
def sd(request, tmp_path_factory):
    yield from built_and_loaded(request, tmp_path_factory, "sd21-base", save_sd21_base_random)


@pytest.fixture(scope="class")
def deepfloyd(request, tmp_path_factory):
    yield from built_and_loaded(request, tmp_path_factory, "if-i-m", save_if_i_m_random)


@pytest.mark.slow
@pytest.mark.timeout(900)  # each test; the SD class builds and loads 2.3 GB first
class TestStableDiffusion21Base:
    def test_loads_with_the_real_shapes(self, sd):
        folder, prior = sd
        assert (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file()
        assert prior.kind == "latent" and prior.prediction_type == "epsilon" and not prior.camera_aware
        assert prior.dtype == torch.float32 and prior.unet.dtype == torch.float32  # fp16 on disk, fp32 on the CPU
        assert prior.vae.dtype == torch.float32
        assert prior.resolution == 512 and prior.sample_shape() == (4, 64, 64)
        assert prior.unet.config.cross_attention_dim == 1024 and prior.unet.config.sample_size == 64
        # the published parameter counts: UNet 865,910,724 (SD 2.x), VAE 83,653,863, OpenCLIP-H text tower 23 layers
        assert n_params(prior.unet) == 865_910_724
        assert n_params(prior.vae) == 83_653_863
        assert prior.text_encoder.config.num_hidden_layers == 23 and prior.text_encoder.config.hidden_size == 1024
        acp = prior.alphas_cumprod
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2  # scaled_linear
        torch.testing.assert_close(acp, torch.cumprod(1 - betas, 0).float(), rtol=1e-4, atol=1e-6)
        emb = prior.encode_text(["a hamburger", ""])
        assert emb.shape == (2, 77, 1024) and emb.dtype == torch.float32
        assert not torch.equal(emb[0], emb[1])

    def test_sds_two_steps(self, sd, request, tmp_path, monkeypatch):
        folder, prior = sd
        rec = Recorder(monkeypatch, prior)
        gen, metrics = run_recipe(request, tmp_path, prior, folder, "sd-sds", 2)
        assert_steps(gen, metrics, 2, 101.0)
        # each step: one 64x64 render, upsampled to 512 px inside encode_images, -> x0 (1,4,64,64) fp32
        assert rec.images == [((1, 3, 64, 64), (1, 4, 64, 64), torch.float32)] * 2
        # batched CFG: the prompt and the empty prompt in one UNet call; eps fp32 (B,4,64,64)
        assert rec.eps == [((2, 4, 64, 64), (2,), (2, 77, 1024), (2, 4, 64, 64), torch.float32, True)] * 2
        # the gradient went back through the full-size VAE encoder to the render
        assert len(rec.render_grads) == 2 and all(0 < g < math.inf for g in rec.render_grads)
        assert gen.run.checkpoint.exists()

    def test_vsd_one_step(self, sd, request, tmp_path, monkeypatch):
        folder, prior = sd
        rec = Recorder(monkeypatch, prior)
        gen, metrics = run_recipe(request, tmp_path, prior, folder, "sd-vsd", 1)
        assert_steps(gen, metrics, 1, 7.5)
        assert rec.images == [((1, 3, 64, 64), (1, 4, 64, 64), torch.float32)]
        assert rec.eps and all(e[3] == (e[0][0], 4, 64, 64) and e[4] == torch.float32 and e[5] for e in rec.eps)
        assert len(rec.render_grads) == 1 and 0 < rec.render_grads[0] < math.inf
        lora = [n for n, p in prior.unet.named_parameters() if "lora" in n]
        assert lora, "VSD's LoRA was not attached to the full-size UNet"


@pytest.mark.slow
@pytest.mark.timeout(900)  # each test; the SD class builds and loads 2.3 GB first
class TestDeepFloydIFIM:
    def test_loads_with_the_real_shapes(self, deepfloyd):
        _, prior = deepfloyd
        assert prior.kind == "pixel" and prior.vae is None and prior.prediction_type == "epsilon"
        assert prior.resolution == 64 and prior.sample_shape() == (3, 64, 64)
        assert prior.unet.config.out_channels == 6 and prior.unet.config.encoder_hid_dim == 4096
        assert 371e6 < n_params(prior.unet) < 372e6  # the IF-I-M model card's "400M"
        assert prior.text_encoder.config.d_model == 4096
        emb = prior.encode_text(["a hamburger", ""])
        assert emb.shape == (2, 77, 4096) and emb.dtype == torch.float32
        rgb = torch.rand(1, 3, 64, 64)
        torch.testing.assert_close(prior.encode_images(rgb), rgb * 2 - 1)  # native size: no resize
        # eps is the first 3 of the UNet's 6 output channels (the other 3 are the learned variance)
        x_t, t = torch.randn(1, 3, 64, 64), torch.tensor([500])
        with torch.no_grad():
            raw = prior.unet(x_t, t, encoder_hidden_states=emb[:1]).sample
        eps = prior.eps(x_t, t, emb[:1])
        assert raw.shape == (1, 6, 64, 64) and eps.shape == (1, 3, 64, 64) and eps.dtype == torch.float32
        torch.testing.assert_close(eps, raw[:, :3])

    def test_sds_two_steps(self, deepfloyd, request, tmp_path, monkeypatch):
        folder, prior = deepfloyd
        rec = Recorder(monkeypatch, prior)
        gen, metrics = run_recipe(request, tmp_path, prior, folder, "if-sds", 2)
        assert_steps(gen, metrics, 2, 21.0)
        assert rec.images == [((1, 3, 64, 64), (1, 3, 64, 64), torch.float32)] * 2
        assert rec.eps == [((2, 3, 64, 64), (2,), (2, 77, 4096), (2, 3, 64, 64), torch.float32, True)] * 2
        assert len(rec.render_grads) == 2 and all(0 < g < math.inf for g in rec.render_grads)


# --- benchmarks/gpu_check.py on a machine without CUDA (quick; CUDA is hidden so the path is the same anywhere) --

def _gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_gpu_check_without_cuda_says_so_in_one_line():
    p = _gpu_check()
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and "no CUDA device" in p.stderr and "Traceback" not in p.stderr


def test_gpu_check_dry_run_lists_every_check():
    p = _gpu_check("--dry-run", "--work", "/nonexistent/gpu-check")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    steps = [line for line in lines if line[:3] in ("1. ", "2. ", "3. ", "4. ")]
    assert len(steps) == 4
    assert "tests/test_hashgrid_cuda.py" in steps[0]  # the module that skips without CUDA
    assert "bench hashgrid --points 1048576 --device cuda" in steps[1]
    assert "sd_speed.py --device cuda --cases sd-sds,sd-vsd,if-sds" in steps[2]
    assert "generate" in steps[3] and "--steps 200" in steps[3] and "'a hamburger'" in steps[3]
    assert "/nonexistent/gpu-check/priors/sd21-base" in steps[3]
    assert not Path("/nonexistent/gpu-check").exists()
