"""Training of the bundled shapes prior: learning on a fixed batch, shape weights, checkpoint/resume, export that
the prior loader opens, provenance of a fine-tune, CLI errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dream3d.errors import Dream3DError
from dream3d.priors import load_prior
from dream3d.priors import shapes_prior_model as spm
from dream3d.priors.shapes_prior_train import (SHAPE_NAMES, make_batch, prompt_token_table, shape_probabilities,
                                               train_shapes_prior)

BUNDLED = Path(__file__).resolve().parents[1] / "dream3d" / "assets" / "shapes_prior"


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    tokenizer, text, unet, sched = spm.build_tokenizer(), spm.build_text_encoder(), spm.build_unet(), \
        spm.build_scheduler()
    gen = torch.Generator().manual_seed(0)
    x0, si, ci, vi, camf = make_batch(8, gen, 32, torch.device("cpu"))
    ids = prompt_token_table(tokenizer)[si, ci, vi]
    t = torch.randint(0, sched.config.num_train_timesteps, (8,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    acp = sched.alphas_cumprod[t][:, None, None, None]
    xt = acp.sqrt() * x0 + (1 - acp).sqrt() * noise
    opt = torch.optim.Adam(list(unet.parameters()) + list(text.parameters()), lr=1e-3)

    def loss_now():
        return F.mse_loss(unet(xt, t, text(ids)[0], class_labels=camf).sample, noise)

    with torch.no_grad():
        before = float(loss_now())
    for _ in range(15):
        loss = loss_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(loss_now())
    assert after < 0.5 * before, (before, after)


def test_shape_weights_change_what_the_batches_show():
    probs = shape_probabilities({"wedge": 3})
    assert torch.isclose(probs.sum(), torch.tensor(1.0))
    assert float(probs[SHAPE_NAMES.index("wedge")]) == pytest.approx(3 / (len(SHAPE_NAMES) + 2))
    only = torch.zeros(len(SHAPE_NAMES))
    only[SHAPE_NAMES.index("torus")] = 1.0
    _, si, _, _, _ = make_batch(6, torch.Generator().manual_seed(1), 16, torch.device("cpu"), only)
    assert (si == SHAPE_NAMES.index("torus")).all()
    assert shape_probabilities(None) is None
    for bad in ({"dog": 2.0}, {"cube": 0.0}):
        with pytest.raises(Dream3DError):
            shape_probabilities(bad)


def test_train_resume_and_export_round_trip(tmp_path):
    """A fine-tune from the shipped prior: stops at 2 steps, resumes to 4 with the same state, writes a prior
    folder that the loader opens (its weights are the EMA weights) and that records where it came from."""
    out = tmp_path / "prior"
    kw = dict(batch=2, resolution=32, seed=3, lr=1e-4, checkpoint_every=2, init_from=BUNDLED, warmup=1,
              shape_weights={"wedge": 2.0}, progress=False)
    train_shapes_prior(out, steps=2, **kw)
    assert json.loads((out / "dream3d_prior.json").read_text())["training"]["trained_steps"] == 2
    train_shapes_prior(out, steps=4, **kw)
    info = json.loads((out / "dream3d_prior.json").read_text())["training"]
    assert info["trained_steps"] == 4 and info["shape_weights"] == {"wedge": 2.0}
    shipped = json.loads((BUNDLED / "dream3d_prior.json").read_text())["training"]
    assert info["init_training"] == shipped
    prior = load_prior(str(out), device="cpu")
    from safetensors.torch import load_file
    saved = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    loaded = prior.unet.state_dict()
    assert all(torch.equal(loaded[k].to(v.dtype), v) for k, v in saved.items())
    with pytest.raises(ValueError, match="seed"):
        train_shapes_prior(out, steps=6, **{**kw, "seed": 4})  # resuming with other settings is refused


def test_cli_shape_weight_must_be_shape_equals_number(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dream3d.cli", "prior", "train", "--out", str(tmp_path / "p"),
                        "--steps", "1", "--shape-weight", "wedge:3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "--shape-weight wants SHAPE=NUMBER" in r.stderr and "Traceback" not in r.stderr
