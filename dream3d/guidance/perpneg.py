"""SDS with Perp-Neg (Armandpour et al., "Re-imagine the Negative Prompt Algorithm", arXiv 2304.04968), the
view-dependent negative prompts of threestudio's `use_perp_neg`.

The other views' prompts are negatives, each projected perpendicular to the positive direction, so they remove
what the positive view does not already ask for (a face on the back) without cancelling it:

    e_pos = ε_pos − ε_u,   e_i = ε(x_t; "<prompt>, <view i>") − ε_u,   ⊥(a, b) = a − (⟨a,b⟩/max(‖b‖², 1e-6))·b
    ε̂    = ε_u + s·(e_pos − Σ_i f_i·⊥(e_i, e_pos))          (per image; ⟨·,·⟩ over all its elements)
    g    = w(t)·(ε̂ − ε)                                      (SDS with ε̂ in place of ε_u + s·e_pos)

evaluated as cfg_combine(ε_u, ε_pos, s) − s·Σ f_i ⊥(e_i, e_pos), so with no negatives (f = 0) it is SDS bit for
bit. With r the camera's place between two views (|a| the wrapped azimuth in degrees, 0 = front):
- front–side, |a| < 90: r = 1 − |a|/90 (1 = front); negatives front and side with
  f_front = 4e^(−r/2) − 2.426, f_side = 4e^(−(1−r)/2) − 2.426;
- side–back, |a| ≥ 90: r = 2 − |a|/90 (1 = side, 0 = back); negatives side and front with
  f_side = e^(−r/2) − 0.606, f_front = e^(−r/2) + 0.967;
- overhead (elevation above the overhead threshold): no negatives.
ε_pos is the prompt of the camera's view (`view_suffixes`, as SDS), or with `interpolate` the embedding
r·emb(front) + (1 − r)·emb(side) (front–side) or r·emb(side) + (1 − r)·emb(back) (side–back), as the paper and
threestudio do. Negative weights are `negative_scale`·f. ε_pos, ε_u and both negatives come from one UNet call
with 4B samples. Without view-dependent prompts (no cameras or guidance.view_dependent=false) there are no views to
negate: then it is SDS, with a one-line notice; likewise when a strict-vocabulary prior cannot encode the view
prompts.

Official code read: threestudio `threestudio/models/prompt_processors/base.py` (`get_text_embeddings_perp_neg`,
the f parameters `perp_neg_f_fs/sf/sb/fsb`), `threestudio/utils/ops.py` (`perpendicular_component`) and
`threestudio/models/guidance/stable_diffusion_guidance.py` (`use_perp_neg` branch of `compute_grad_sds`),
commit 28d9d80. Same defaults. threestudio writes this combination in the diffusers form ε_u + s(...) (its plain
SDS in the form ε_c + s(ε_c − ε_u)), so its guidance_scale with Perp-Neg is s here as is. The view regions are
dream3d's (`dream3d.cameras.view_index`); the interpolation spans 0–90–180 degrees as in threestudio.

A method of its own rather than an SDS setting: it has its own settings and cost (4B instead of 2B samples), and
its own recipe and row in `dream3d bench shapes` ("SDS+Perp-Neg"); the projection is shared by no other method
here (threestudio's SDI/ASD recipes combine it with theirs; dream3d's do not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dream3d.cameras import VIEW_SUFFIXES, view_index, wrap_azimuth
from dream3d.errors import PromptError
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfg import cfg_combine, tile_cameras
from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance
from dream3d.priors.protocol import DiffusionPrior

log = logging.getLogger("dream3d")

FRONT, SIDE, BACK, OVERHEAD = range(4)  # indices into VIEW_SUFFIXES


@dataclass
class PerpNegSettings:
    """guidance.perpneg: the strength of the perpendicular negatives and whether the positive prompt is
    interpolated between views."""

    negative_scale: float = 1.0  # multiplies threestudio's weights f; 0 = plain SDS
    interpolate: bool = True  # positive embedding interpolated between the neighbouring views


def perpendicular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⊥(a, b) = a − (⟨a,b⟩/max(‖b‖², 1e-6))·b per sample, for a, b (B,...)."""
    dims = tuple(range(1, a.dim()))
    coef = (a * b).sum(dims, keepdim=True) / (b * b).sum(dims, keepdim=True).clamp_min(1e-6)
    return a - coef * b


def view_blend(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per camera, see the module doc: r (B,) in [0,1]; the two views it lies between (B,2) long, the one r = 1
    means first; the two negative views (B,2) long; their weights f (B,2) float64 (zero for overhead cameras)."""
    a = wrap_azimuth(torch.as_tensor(azimuth_deg, dtype=torch.float64)).abs()
    front_side = (a < 90.0)[:, None]
    r = torch.where(front_side[:, 0], 1.0 - a / 90.0, 2.0 - a / 90.0)
    between = torch.where(front_side, torch.tensor([FRONT, SIDE]), torch.tensor([SIDE, BACK]))
    negatives = torch.where(front_side, torch.tensor([FRONT, SIDE]), torch.tensor([SIDE, FRONT]))
    e = torch.exp(-0.5 * r)
    f_front_side = torch.stack([4 * e - 2.426, 4 * torch.exp(-0.5 * (1 - r)) - 2.426], -1)
    f_side_back = torch.stack([e - 0.606, e + 0.967], -1)
    f = torch.where(front_side, f_front_side, f_side_back)
    overhead = (view_index(elevation_deg, azimuth_deg) == OVERHEAD)[:, None]
    return r, between, negatives, torch.where(overhead, torch.zeros_like(f), f)


@register("perpneg", PerpNegSettings, "SDS with Perp-Neg: the other views' prompts as negatives, perpendicular to "
          "the positive direction (Armandpour et al., arXiv 2304.04968)")
class PerpNegGuidance(SDSGuidance):
    """SDS + Perp-Neg. Arguments as `SDSGuidance` plus the `PerpNegSettings` fields."""

    def __init__(self, prior: DiffusionPrior, negative_scale: float = PerpNegSettings.negative_scale,
                 interpolate: bool = PerpNegSettings.interpolate, **kwargs):
        super().__init__(prior, **kwargs)
        self.negative_scale = float(negative_scale)
        self.interpolate = bool(interpolate)
        self._warned: set[str] = set()

    def _notice(self, key: str, text: str) -> None:
        if key not in self._warned:
            log.warning("perpneg: %s", text)
            self._warned.add(key)

    def _encodable(self, prompts: list[str]) -> bool:
        """Whether a strict-vocabulary prior can encode every prompt (other priors: always)."""
        if not (getattr(self.prior, "strict_vocabulary", False) and hasattr(self.prior, "check_prompt")):
            return True
        try:
            for p in prompts:
                self.prior.check_prompt(p)
        except PromptError:
            return False
        return True

    def grad(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: GuidanceBatch) -> torch.Tensor:
        """g = w(t)·(ε̂_perp-neg(x_t) − ε) (B,C,h,w) for x0 x (B,C,h,w), timesteps t (B,), noise ε like x."""
        cams = batch.cameras
        if cams is None or not batch.view_dependent:
            self._notice("views", "no view-dependent prompts (cameras and guidance.view_dependent=true are needed); "
                                  "running plain SDS")
            return super().grad(x, t, noise, batch)
        view_prompts = [batch.prompt + s for s in VIEW_SUFFIXES]
        if not self._encodable(view_prompts[:3]):
            self._notice("vocabulary", "the prior cannot encode the view prompts; running plain SDS")
            return super().grad(x, t, noise, batch)
        x = x.detach()
        b = x.shape[0]
        x_t = self.diffuse(x, t, noise)
        cond, neg = self.prompts(batch, b)
        enc = self.prior.encode_text
        table = enc(view_prompts)  # (4,L,D): front, side, back, overhead
        r, between, negs, f = view_blend(cams.elevation_deg, cams.azimuth_deg)
        emb_pos = enc(cond)
        if self.interpolate:
            blend = r.to(table)[:, None, None]
            mixed = blend * table[between[:, 0]] + (1 - blend) * table[between[:, 1]]
            overhead = (view_index(cams.elevation_deg, cams.azimuth_deg) == OVERHEAD).to(table.device)
            emb_pos = torch.where(overhead[:, None, None], emb_pos, mixed)
        embs = torch.cat([emb_pos, enc(neg), table[negs[:, 0]], table[negs[:, 1]]])
        eps = self.prior.eps(torch.cat([x_t] * 4), t.repeat(4), embs, tile_cameras(cams, 4))
        eps_pos, eps_u, eps_n0, eps_n1 = eps.split(b)
        view = (-1,) + (1,) * (x.dim() - 1)
        f = (self.negative_scale * f).to(x)
        e_pos = eps_pos - eps_u
        push = f[:, 0].view(view) * perpendicular(eps_n0 - eps_u, e_pos) + \
            f[:, 1].view(view) * perpendicular(eps_n1 - eps_u, e_pos)
        eps_hat = cfg_combine(eps_u, eps_pos, self.guidance_scale) - self.guidance_scale * push
        w = self.weight_like(t, x)
        return w * (eps_hat - noise)  # SDS with the Perp-Neg prediction

