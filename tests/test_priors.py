"""Prior loading (SD-style, IF-style, bundled-style folders built and saved here) and the Prior interface."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import dream3d.priors as priors
from dream3d.cameras import camera_features, make_cameras
from dream3d.errors import ModelLoadError, PromptError
from dream3d.priors import Prior, load_prior
from dream3d.priors.prediction import to_eps
from tiny_models import save_tiny_bundled, save_tiny_if, save_tiny_sd


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    return {"sd": save_tiny_sd(root / "sd"), "sd_v": save_tiny_sd(root / "sd_v", prediction_type="v_prediction"),
            "if": save_tiny_if(root / "if"), "bundled": save_tiny_bundled(root / "bundled"),
            "loose": save_tiny_bundled(root / "loose", strict_vocabulary=False, half=False)}


@pytest.fixture(scope="module")
def sd(folders):
    return Prior.from_pretrained(folders["sd"])


@pytest.fixture(scope="module")
def if_prior(folders):
    return Prior.from_pretrained(folders["if"])


@pytest.fixture(scope="module")
def bundled(folders):
    return Prior.from_pretrained(folders["bundled"])


def _frozen(prior: Prior) -> bool:
    mods = [prior.unet, prior.text_encoder] + ([prior.vae] if prior.vae is not None else [])
    return all(not p.requires_grad for m in mods for p in m.parameters())


# --- SD-style (latent) -------------------------------------------------------------------------------------------

def test_sd_style_loads_as_latent_prior(sd, folders):
    from diffusers import DDIMScheduler

    assert sd.kind == "latent" and not sd.camera_aware and sd.prediction_type == "epsilon"
    assert sd.resolution == 16  # unet sample_size 8 x VAE factor 2
    assert sd.sample_shape() == (4, 8, 8)
    assert sd.num_train_timesteps == 1000 and sd.alphas_cumprod.dtype == torch.float32
    ref = DDIMScheduler.from_pretrained(folders["sd"], subfolder="scheduler").alphas_cumprod
    assert torch.equal(sd.alphas_cumprod, ref.float())
    assert _frozen(sd) and sd.dtype == torch.float32 and sd.vae.dtype == torch.float32


def test_encode_text_shapes_and_cache(sd):
    calls = []
    handle = sd.text_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        e1 = sd.encode_text(["a red cube, zz unique", ""])
        e2 = sd.encode_text(["", "a red cube, zz unique", "a red cube, zz unique"])
    finally:
        handle.remove()
    assert e1.shape == (2, 16, 32) and e2.shape == (3, 16, 32)
    assert calls == [2]  # the second call was served from the cache
    assert torch.equal(e2[1], e1[0]) and torch.equal(e2[0], e1[1])
    tok = sd.tokenizer(["a red cube, zz unique"], padding="max_length", max_length=16, truncation=True,
                       return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(e1[0], sd.text_encoder(tok.input_ids)[0][0])


def test_latent_encode_images_is_vae_posterior_mean_and_differentiable(sd):
    rgb = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x0 = sd.encode_images(rgb)
    assert x0.shape == (2, 4, 8, 8) and x0.dtype == torch.float32
    with torch.no_grad():
        big = F.interpolate(rgb, (16, 16), mode="bilinear", align_corners=False, antialias=True)
        ref = sd.vae.encode(big * 2 - 1).latent_dist.mean * sd.vae.config.scaling_factor
    assert torch.allclose(x0, ref, atol=1e-6)
    x0.square().sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in sd.vae.parameters())
    assert sd.decode(x0.detach()).shape == (2, 3, 16, 16)


def test_eps_shape_and_no_grad(sd):
    x = torch.randn(3, 4, 8, 8)
    e = sd.eps(x, torch.tensor([1, 500, 999]), sd.encode_text(["a", "b", "c"]))
    assert e.shape == (3, 4, 8, 8) and e.dtype == torch.float32 and not e.requires_grad
    e_scalar = sd.eps(x, 500, sd.encode_text(["a"]))  # scalar t and (1,L,D) embeddings broadcast
    e_full = sd.eps(x, torch.tensor([500] * 3), sd.encode_text(["a"] * 3))
    assert torch.allclose(e_scalar, e_full, atol=1e-6)


def test_v_prediction_converted_to_eps(folders, sd):
    """Same weights saved with a v-prediction scheduler: ε must be α·v + σ·x_t, v = the raw UNet output."""
    v_prior = Prior.from_pretrained(folders["sd_v"])
    assert v_prior.prediction_type == "v_prediction"
    x_t = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 400, 990])
    emb = sd.encode_text(["a red cube"] * 3)
    v = sd.eps(x_t, t, emb)  # the epsilon-configured copy returns the raw UNet output
    # ᾱ from the scaled-linear betas of tiny_models.save_tiny_sd, computed independently in float64
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)[t].reshape(-1, 1, 1, 1)
    expected = abar.sqrt() * v.double() + (1 - abar).sqrt() * x_t.double()
    assert torch.allclose(v_prior.eps(x_t, t, emb).double(), expected, atol=1e-5)


def test_to_eps_sample_prediction_round_trip():
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a, s = torch.tensor([0.9, 0.3]), torch.tensor([0.1, 0.7]).sqrt()
    a = (1 - s ** 2).sqrt()
    x_t = a.view(-1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1) * eps
    assert torch.allclose(to_eps(x0, x_t, a, s, "sample"), eps, atol=1e-5)
    v = a.view(-1, 1, 1, 1) * eps - s.view(-1, 1, 1, 1) * x0
    assert torch.allclose(to_eps(v, x_t, a, s, "v_prediction"), eps, atol=1e-5)


# --- IF-style (pixel, T5, learned variance) ----------------------------------------------------------------------

def test_if_style_loads_as_pixel_prior(if_prior):
    assert if_prior.kind == "pixel" and not if_prior.camera_aware and if_prior.vae is None
    assert if_prior.resolution == 8 and if_prior.sample_shape() == (3, 8, 8)
    assert if_prior.unet.config.out_channels == 6 and _frozen(if_prior)


def test_if_variance_channels_dropped(if_prior):
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([50, 700])
    emb = if_prior.encode_text(["a red cube", "a dog"])
    e = if_prior.eps(x_t, t, emb)
    with torch.no_grad():
        raw = if_prior.unet(x_t, t, encoder_hidden_states=emb).sample
    assert raw.shape[1] == 6 and e.shape == (2, 3, 8, 8)
    assert torch.allclose(e, raw[:, :3], atol=1e-6)


def test_t5_text_encoding_uses_attention_mask(if_prior):
    prompt = "a red cube"
    tok = if_prior.tokenizer([prompt], padding="max_length", max_length=if_prior.max_length, return_tensors="pt")
    assert tok.attention_mask.sum() < tok.attention_mask.numel()  # there is padding to mask
    with torch.no_grad():
        masked = if_prior.text_encoder(tok.input_ids, attention_mask=tok.attention_mask)[0][0]
    assert torch.allclose(if_prior.encode_text([prompt])[0], masked, atol=1e-6)


def test_pixel_encode_images_resizes_and_scales(if_prior):
    const = torch.full((1, 3, 16, 16), 0.25)
    assert torch.allclose(if_prior.encode_images(const), torch.full((1, 3, 8, 8), -0.5), atol=1e-6)
    native = torch.rand(2, 3, 8, 8)
    assert torch.allclose(if_prior.encode_images(native), native * 2 - 1)
    rgb = torch.rand(2, 3, 16, 16, requires_grad=True)
    if_prior.encode_images(rgb).sum().backward()
    # d/drgb of Σ(2·resize(rgb) − 1): the resize weights of every output pixel sum to 1
    assert torch.allclose(rgb.grad.sum(), torch.tensor(2.0 * 2 * 3 * 8 * 8))
    assert torch.allclose(if_prior.decode(if_prior.encode_images(native)), native, atol=1e-6)


# --- bundled-style (camera-aware, word-level tokenizer, fp16 weights) ----------------------------------------------

def test_bundled_style_loads_camera_aware(bundled):
    assert bundled.kind == "pixel" and bundled.camera_aware and bundled.resolution == 8
    assert bundled.recommended_cfg == 3.0 and bundled.strict_vocabulary
    assert bundled.dtype == torch.float32 and bundled.unet.dtype == torch.float32  # fp16 files, fp32 on CPU


def test_bundled_eps_uses_cameras(bundled):
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([300, 300])
    emb = bundled.encode_text(["a red cube, front view"] * 2)
    cams = make_cameras([10.0, 50.0], [0.0, 120.0])
    e_cam = bundled.eps(x_t, t, emb, cams)
    e_none = bundled.eps(x_t, t, emb, None)
    e_zero = bundled.eps(x_t, t, emb, torch.zeros(2, 5))
    with torch.no_grad():
        raw = bundled.unet(x_t, t, encoder_hidden_states=emb, class_labels=camera_features(cams)).sample
    assert torch.allclose(e_cam, raw, atol=1e-6)
    assert torch.allclose(e_none, e_zero) and not torch.allclose(e_cam, e_none, atol=1e-4)
    # cameras for B images tile over a 2B batch (batched CFG order)
    e2 = bundled.eps(torch.cat([x_t] * 2), t.repeat(2), torch.cat([emb] * 2), cams)
    assert torch.allclose(e2, torch.cat([e_cam] * 2), atol=1e-6)


def test_priors_that_are_not_camera_aware_ignore_cameras(if_prior):
    x_t, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    emb = if_prior.encode_text(["a dog"] * 2)
    cams = make_cameras([10.0, 50.0], [0.0, 120.0])
    assert torch.equal(if_prior.eps(x_t, t, emb, cams), if_prior.eps(x_t, t, emb))


def test_strict_vocabulary_names_unknown_word(bundled, folders):
    bundled.encode_text(["a red cube, front view", ""])  # known words and the empty prompt are fine
    with pytest.raises(PromptError, match="unknown word 'Purple'"):
        bundled.encode_text(["a Purple cube"])
    with pytest.raises(PromptError, match="too long"):
        bundled.encode_text(["a red cube " * 5])
    loose = Prior.from_pretrained(folders["loose"])
    assert loose.encode_text(["a purple cube"]).shape[0] == 1  # not strict: unknown words become [UNK]


def test_load_prior_bundled_default(monkeypatch, tmp_path, folders):
    monkeypatch.setattr(priors, "BUNDLED_PRIOR_DIR", tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="bundled shapes prior is missing"):
        load_prior(None)
    monkeypatch.setattr(priors, "BUNDLED_PRIOR_DIR", folders["bundled"])
    assert load_prior(None).camera_aware and load_prior("bundled").camera_aware


# --- errors ----------------------------------------------------------------------------------------------------------

def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_folder_is_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        Prior.from_pretrained(tmp_path / "nope")
    assert _one_line(err).startswith(f"cannot load prior '{tmp_path / 'nope'}'")
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        Prior.from_pretrained(tmp_path)


def test_unreachable_hub_id_is_model_load_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as err:
        Prior.from_pretrained("no-such-owner/no-such-model")
    assert _one_line(err).startswith("cannot load prior 'no-such-owner/no-such-model'")


def test_broken_component_is_model_load_error(tmp_path, folders):
    broken = shutil.copytree(folders["if"], tmp_path / "broken")
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError) as err:
        Prior.from_pretrained(broken)
    assert "component 'unet'" in _one_line(err)


def test_sdxl_style_index_rejected(tmp_path, folders):
    folder = shutil.copytree(folders["sd"], tmp_path / "xl")
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="two text encoders"):
        Prior.from_pretrained(folder)


def test_bare_name_that_is_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="no such folder"):
        Prior.from_pretrained("my_prior")


def test_half_precision_path(folders, bundled):
    """dtype=fp16 (what CUDA gets by default): text encoder and UNet in fp16, VAE in fp32, ε returned in fp32."""
    sd16 = Prior.from_pretrained(folders["sd"], dtype=torch.float16)
    assert sd16.unet.dtype == torch.float16 and sd16.text_encoder.dtype == torch.float16
    assert sd16.vae.dtype == torch.float32 and sd16.encode_images(torch.rand(1, 3, 16, 16)).dtype == torch.float32
    b16 = Prior.from_pretrained(folders["bundled"], dtype=torch.float16)
    x_t, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7)), torch.tensor([100, 600])
    cams = make_cameras([10.0, 50.0], [0.0, 120.0])
    e16 = b16.eps(x_t, t, b16.encode_text(["a red cube"] * 2), cams)
    e32 = bundled.eps(x_t, t, bundled.encode_text(["a red cube"] * 2), cams)
    assert e16.dtype == torch.float32 and torch.allclose(e16, e32, atol=0.05)
