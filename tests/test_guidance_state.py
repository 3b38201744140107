"""Guidance methods as nn.Modules: state_dict keys (as written in run checkpoints), the prior kept out of the
module, and checkpoint round trips through `dream3d.checkpoint.module_tensors` / `load_module_tensors`."""

from __future__ import annotations

import pytest
import torch

from dream3d.cameras import make_cameras
from dream3d.checkpoint import load_module_tensors, module_tensors
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfd import CFDGuidance
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.vsd import VSDGuidance
from tiny_models import PointMassPrior


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread, so φ's backward (and with it a resumed step) is bitwise reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(**kw) -> GuidanceBatch:
    cams = make_cameras([10.0, 40.0], [0.0, 170.0])
    return GuidanceBatch(prompt="a red cube", cameras=cams, view_dependent=True, total_steps=10, **kw)


def test_sds_state_is_the_generator_only():
    prior = PointMassPrior({"": torch.zeros(3, 4, 4).double()}, default=torch.zeros(3, 4, 4).double())
    sds = SDSGuidance(prior)
    assert list(sds.state_dict()) == ["rng_state"] and sds.state_dict()["rng_state"].dtype == torch.uint8
    with pytest.raises(KeyError, match="stray"):
        sds.load_state_dict({**sds.state_dict(), "stray": torch.zeros(1)})


def test_vsd_state_dict_keys_and_checkpoint_round_trip(tiny_priors):
    prior = tiny_priors["bundled"]
    torch.manual_seed(0)
    a = VSDGuidance(prior, lora_lr=1e-3, seed=1)
    rgb, batch = torch.rand(2, 3, 8, 8), _batch()
    a(rgb, batch, step=0)
    keys = list(a.state_dict())
    assert keys[0] == "rng_state"
    groups = [k.split(".")[1] for k in keys[1:]]
    assert all(k.startswith("phi.") for k in keys[1:]) and groups == sorted(groups, key=["lora", "camera", "opt"].index)
    assert {"phi.camera.0.weight", "phi.camera.2.bias", "phi.opt.0.step", "phi.opt.0.exp_avg"} <= set(keys)
    lora = [k for k in keys if k.startswith("phi.lora.")]
    assert len(lora) == len(a.phi.lora) and all(k[len("phi.lora."):] in a.phi.lora for k in lora)
    # the prior (its UNet included) is used, not owned: none of its weights are the module's
    unet = {id(p) for p in prior.unet.parameters()}
    assert not any(id(p) in unet for p in a.parameters())
    assert {id(p) for p in a.parameters()} == {id(p) for p in a.phi.camera.parameters()}
    tensors = {k: v.clone() for k, v in module_tensors("guidance", a).items()}  # views of live weights otherwise
    assert list(tensors) == [f"guidance.{k}" for k in keys]
    out_a = a(rgb, batch, step=1)
    b = VSDGuidance(prior, lora_lr=1e-3, seed=99)
    load_module_tensors("guidance", b, {**tensors, "renderer.x": torch.zeros(1)})
    assert b(rgb, batch, step=1).info == out_a.info
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    a.close(), b.close()


def test_cfd_state_dict_keys():
    prior = PointMassPrior({"": torch.zeros(3, 4, 4).double()}, default=torch.zeros(3, 4, 4).double())
    cfd = CFDGuidance(prior, guidance_scale=1.0, subsamples=2)
    assert list(cfd.state_dict()) == ["rng_state"]  # the noise field is created on the first call
    depth = torch.full((2, 1, 8, 8), 2.5)
    cfd(torch.rand(2, 3, 4, 4, dtype=torch.float64), _batch(depth=depth, opacity=torch.ones_like(depth)), step=0)
    state = cfd.state_dict()
    assert list(state) == ["rng_state", "noise.table", "noise.background", "noise.voxel_size"]
    again = CFDGuidance(prior, guidance_scale=1.0, subsamples=2, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(state[k], v) for k, v in again.state_dict().items())
