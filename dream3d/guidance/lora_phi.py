"""VSD's φ: the prior's UNet with a LoRA adapter and a camera embedding, trained online with its own AdamW.

- LoRA (peft, via diffusers' `unet.add_adapter`) of rank r on the attention projections `to_q, to_k, to_v,
  to_out.0`; lora_B starts at zero (peft's default), so φ starts equal to the prior. Adapter weights are kept in
  fp32 even when the UNet runs in fp16 (peft casts the input to the adapter dtype and the sum back).
- Camera embedding MLP(16 → D → D) (SiLU) on the flattened 4×4 camera-to-world matrix, D = the UNet's time
  embedding width, last layer zero-initialized. Its output is **added to the time embedding** by a forward hook on
  `unet.time_embedding`, active only inside `phi.active(...)`. ProlificDreamer uses diffusers' `class_embedding`
  slot, which the UNet adds to the time embedding right after `time_embedding`; a hook is used instead because
  the bundled prior's UNet already owns that slot (its "projection" camera features) and SD/IF UNets have none.
  The sum is the same: emb = time_embedding(t) + MLP(c2w) (+ class/aug embeddings).
- A "dropped" camera is the zero matrix (the MLP then outputs its bias path); a camera-aware prior's own camera
  features are dropped along with it.
- The prior's UNet is shared: adapters stay disabled (and the hook inert) outside `active`, so every other user
  of the prior (the frozen VSD branch, previews, other methods) sees the original model. Each PhiModel uses its
  own adapter name; `close()` removes the adapter and the hook.

The φ loss is the ordinary diffusion loss in the model's native parameterization on a *detached* x0:
    t' ~ U{0..T−1}, ε' ~ N(0,I), x_t' = α x + σ ε',  L_φ = mean ‖pred_φ − target‖²
with ε-prediction error e = ε̂_φ − ε' scaled by 1 (epsilon), 1/α (v: v̂ − v = e/α) or σ/α (sample: x̂0 − x0 = −σe/α).
"""

from __future__ import annotations

import itertools
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from dream3d.cameras import Cameras, camera_features
from dream3d.errors import ConfigError
from dream3d.guidance.diffusion import alpha_sigma, forward_diffusion
from dream3d.guidance.state import TensorState, attach_shared
from dream3d.priors.protocol import DiffusionPrior

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
_names = itertools.count()


def native_error_scale(prediction_type: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Factor turning the ε-prediction error into the error of the model's own output (see module doc). (B,)"""
    if prediction_type == "epsilon":
        return torch.ones_like(alpha)
    if prediction_type == "v_prediction":
        return 1.0 / alpha
    if prediction_type == "sample":
        return sigma / alpha
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def camera_input(cameras: Cameras | None, batch: int, device: torch.device) -> torch.Tensor:
    """Flattened camera-to-world matrices (batch,16) fp32; zeros without cameras."""
    if cameras is None:
        return torch.zeros(batch, 16, device=device)
    return cameras.c2w.reshape(-1, 16).to(device, torch.float32)


class OptimizerTensors(TensorState):
    """An optimizer's per-parameter state as state_dict tensors "<param index>.<key>" (numbers as 0-d tensors)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        super().__init__()
        self.optimizer = optimizer

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, st in self.optimizer.state_dict()["state"].items():
            for k, v in st.items():
                out[f"{i}.{k}"] = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        state: dict[int, dict] = {}
        for key, v in tensors.items():
            i, name = key.split(".", 1)
            state.setdefault(int(i), {})[name] = v.detach().clone()
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})


class PhiModel(TensorState):
    """LoRA + camera embedding on `prior.unet` (see module doc). rank: LoRA rank (alpha = rank); lr: AdamW lr.

    An `nn.Module` whose state_dict is "lora.<UNet module path>" (the adapter's weights, which live in the shared
    UNet), "camera.*" (the camera MLP, a submodule) and "opt.<i>.<key>" (AdamW's state); the UNet itself is not
    a submodule.
    """

    def __init__(self, prior: DiffusionPrior, rank: int = 4, lr: float = 1e-4):
        super().__init__()
        unet = getattr(prior, "unet", None)
        if unet is None or not hasattr(unet, "add_adapter"):
            raise ConfigError("vsd needs a diffusers prior with a UNet (LoRA is trained on it)")
        if rank < 1:
            raise ConfigError(f"guidance.vsd.lora_rank must be >= 1; got {rank}")
        from peft import LoraConfig  # imported when φ is built: peft loads transformers

        attach_shared(self, "prior", prior)
        attach_shared(self, "unet", unet)
        self.adapter = f"dream3d_vsd_{next(_names)}"
        with warnings.catch_warnings():  # several φ on one shared UNet are intended (one adapter each)
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                                        target_modules=LORA_TARGETS), adapter_name=self.adapter)
        tag = f".{self.adapter}."
        self.lora = {n.replace(tag, "."): p for n, p in unet.named_parameters() if tag in n}
        if not self.lora:
            raise ConfigError(f"the prior's UNet has no attention projections {LORA_TARGETS} for LoRA")
        for p in self.lora.values():
            p.data = p.data.float()  # train adapter weights in fp32
        unet.disable_adapters()
        self._trainable()

        dim = unet.time_embedding.linear_2.out_features
        self.camera = nn.Sequential(nn.Linear(16, dim), nn.SiLU(), nn.Linear(dim, dim)).to(prior.device)
        nn.init.zeros_(self.camera[2].weight)
        nn.init.zeros_(self.camera[2].bias)
        self._cam_emb: torch.Tensor | None = None
        self._hook = unet.time_embedding.register_forward_hook(self._add_camera)
        self.params = [self.lora[k] for k in sorted(self.lora)] + list(self.camera.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        self.opt = OptimizerTensors(self.optimizer)

    # --- switching the shared UNet between the prior and φ ---------------------------------------------------
    def _add_camera(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook on unet.time_embedding: emb + MLP(c2w) while φ is active, unchanged otherwise."""
        if self._cam_emb is None:
            return None
        return output + self._cam_emb.to(output.dtype)

    @contextmanager
    def active(self, c2w: torch.Tensor) -> Iterator[None]:
        """Run the UNet as φ: this adapter on, camera embedding MLP(c2w) (batch,16) added to the time embedding."""
        self.unet.enable_adapters()
        self.unet.set_adapter(self.adapter)
        self._trainable()
        self._cam_emb = self.camera(c2w)
        try:
            yield
        finally:
            self._cam_emb = None
            self.unet.disable_adapters()
            self._trainable()

    def _trainable(self) -> None:
        """requires_grad on this adapter's weights. peft's enable/disable switches clear it, and autograd drops the
        gradient of a leaf whose requires_grad is off at backward time (backward runs after `active` exits)."""
        for p in self.lora.values():
            p.requires_grad_(True)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, c2w: torch.Tensor,
            prior_cameras: Cameras | torch.Tensor | None) -> torch.Tensor:
        """ε̂_φ (B,C,h,w) fp32 with autograd to the LoRA/camera parameters; c2w (B,16); prior_cameras go to the
        prior as its own camera condition (camera-aware priors)."""
        with self.active(c2w):
            return self.prior.eps_grad(x_t, t, emb, prior_cameras)

    # --- training ---------------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, emb: torch.Tensor,
             cameras: Cameras | None, keep: torch.Tensor) -> torch.Tensor:
        """L_φ (scalar) on detached x0 x (B,C,h,w) at timesteps t (B,) with noise ε' like x; keep (B,) bool: camera
        kept (False: dropped, for camera CFG)."""
        x = x.detach()
        alpha, sigma = alpha_sigma(self.prior.alphas_cumprod, t, x.device)
        x_t = forward_diffusion(x, alpha, sigma, noise)  # x_t' = α x + σ ε'
        keep_f = keep.to(x.device, torch.float32)
        c2w = camera_input(cameras, x.shape[0], x.device) * keep_f[:, None]
        feats = None if cameras is None else camera_features(cameras).to(x.device) * keep_f[:, None]
        err = self.eps(x_t, t, emb, c2w, feats) - noise  # ε-prediction error
        view = (-1,) + (1,) * (x.dim() - 1)
        err = err * native_error_scale(self.prior.prediction_type, alpha, sigma).view(view)
        return err.square().mean()  # ordinary diffusion loss in the model's parameterization

    def step(self, loss: torch.Tensor) -> None:
        """One AdamW step on L_φ."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    # --- checkpoint state -------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The LoRA weights, "lora.<module path>" (the camera MLP and AdamW state are the submodules')."""
        return {f"lora.{k}": v.detach() for k, v in self.lora.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        lora = {f"lora.{k}": p for k, p in self.lora.items()}
        missing = [k for k in lora if k not in tensors]
        if missing:
            raise ValueError(f"VSD state lacks {len(missing)} LoRA tensors (e.g. {missing[0]}): other prior?")
        with torch.no_grad():
            for k, p in lora.items():
                p.copy_(tensors[k].to(p.device, p.dtype))
        super().load_state_tensors({k: v for k, v in tensors.items() if k not in lora})

    def close(self) -> None:
        """Remove the adapter and the hook from the prior's UNet."""
        self._hook.remove()
        self.unet.delete_adapters(self.adapter)
