"""The prior's memory options keep its ε-predictions and image encodings: exactly up to float reordering where
nothing is traded (slicing, layout), within the precision where weights are cast (bf16, fp16)."""

from __future__ import annotations

import pytest
import torch

from dream3d.config import load_config
from dream3d.errors import ConfigError
from dream3d.priors import load_prior
from dream3d.priors.memory import MemoryOptions
from tiny_models import save_tiny_if, save_tiny_sd


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    return {"sd": save_tiny_sd(root / "sd"), "if": save_tiny_if(root / "if")}


def _eps_and_x0(prior, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(2, 3, 24, 24, generator=g)
    x0 = prior.encode_images(rgb)
    x_t = torch.randn(x0.shape, generator=g)
    emb = prior.encode_text(["a hamburger", "a red cube"])
    with torch.no_grad():
        return prior.eps(x_t, torch.tensor([100, 700]), emb), x0.detach()


@pytest.mark.parametrize("kind", ["sd", "if"])
@pytest.mark.parametrize("option, atol", [({"attention_slicing": True}, 1e-5), ({"vae_slicing": True}, 1e-5),
                                          ({"channels_last": True}, 1e-5), ({"precision": "bf16"}, 0.1),
                                          ({"precision": "fp16"}, 0.02)])
def test_memory_options_keep_eps(folders, kind, option, atol):
    ref_eps, ref_x0 = _eps_and_x0(load_prior(folders[kind]))
    prior = load_prior(folders[kind], memory=MemoryOptions(**option))
    eps, x0 = _eps_and_x0(prior)
    assert eps.dtype == torch.float32 and eps.shape == ref_eps.shape
    torch.testing.assert_close(x0, ref_x0, atol=1e-5, rtol=0)  # the VAE always runs in fp32
    err = (eps - ref_eps).abs().max().item()
    assert err <= atol * max(1.0, ref_eps.abs().max().item()), err
    if "precision" in option:
        assert prior.unet.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[option["precision"]]
        assert err > 0  # the cast did happen


def test_memory_options_are_config_settings(folders):
    cfg = load_config(None, ["prior_memory.precision=bf16", "prior_memory.attention_slicing=true"])
    assert cfg.prior_memory == MemoryOptions(precision="bf16", attention_slicing=True)
    with pytest.raises(ConfigError, match="prior_memory.precision"):
        load_config(None, ["prior_memory.precision=int4"])
    with pytest.raises(ConfigError, match="cpu_offload"):
        load_prior(folders["sd"], memory=MemoryOptions(cpu_offload=True))  # CPU: nothing to offload to


@pytest.mark.skipif(not torch.cuda.is_available(), reason="sequential CPU offload needs a CUDA device")
def test_cpu_offload_keeps_eps_on_cuda(folders):
    ref, _ = _eps_and_x0(load_prior(folders["sd"], device="cuda", dtype=torch.float32))
    eps, _ = _eps_and_x0(load_prior(folders["sd"], device="cuda", dtype=torch.float32,
                                    memory=MemoryOptions(cpu_offload=True)))
    torch.testing.assert_close(eps, ref, atol=1e-5, rtol=1e-5)
