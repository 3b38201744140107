"""What kind of prior a name points at, read from its model_index.json (and dream3d_prior.json) without loading
any weights, and the guidance scale each kind distils best with.

kinds: "shapes" (a dream3d shapes-world prior: it has dream3d_prior.json, like the bundled one), "latent" (a
Stable-Diffusion-style model with a VAE), "pixel" (a DeepFloyd-IF-style stage-I model, no VAE).

Example:
    >>> inspect_prior(None).kind
    'shapes'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dream3d.priors.loading import METADATA_FILE, read_index

# DreamFusion-style SDS scales in the diffusers form eps_u + s (eps_c - eps_u): threestudio's dreamfusion-sd.yaml
# uses 100 and dreamfusion-if.yaml 20 in its form eps_c + s (eps_c - eps_u), i.e. 101 and 21 here.
DISTILLATION_SCALE = {"latent": 101.0, "pixel": 21.0}
KIND_NAMES = {"shapes": "a shapes-world prior", "latent": "a latent (Stable-Diffusion-style) prior",
              "pixel": "a pixel (DeepFloyd-IF-style) prior"}
BUNDLED_PRIOR_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_prior"
BUNDLED_ALIASES = ("bundled", "shapes")


def is_bundled(name: str | Path | None) -> bool:
    """Whether `name` means the bundled shapes prior (None, "", "bundled" or "shapes" that is not a folder)."""
    return not name or (str(name) in BUNDLED_ALIASES and not Path(str(name)).exists())


def distillation_scale(kind: str, recommended: float | None = None) -> float:
    """The guidance scale a prior distils with by default: its metadata's `recommended_cfg` when it has one, else
    101 for latent and 21 for pixel priors."""
    return float(recommended) if recommended is not None else DISTILLATION_SCALE.get(kind, 101.0)


@dataclass(frozen=True)
class PriorInfo:
    """name: as given ("" = the bundled prior); kind: "shapes" | "latent" | "pixel"; metadata: dream3d_prior.json."""

    name: str
    kind: str
    metadata: dict = field(default_factory=dict)

    def describe(self) -> str:
        """'the bundled shapes prior' or "'NAME', a latent (Stable-Diffusion-style) prior"."""
        return "the bundled shapes prior" if not self.name else f"'{self.name}', {KIND_NAMES[self.kind]}"

    @property
    def guidance_scale(self) -> float:
        """The scale `distillation_scale` gives this prior."""
        return distillation_scale("pixel" if self.kind == "shapes" else self.kind, self.metadata.get("recommended_cfg"))


def inspect_prior(name: str | Path | None) -> PriorInfo:
    """The kind and metadata of the prior `name` (folder, hub id, or None/"bundled"); ModelLoadError (one line)
    when it cannot be read. Reads only the JSON files."""
    if is_bundled(name):
        return PriorInfo("", "shapes", json.loads((BUNDLED_PRIOR_DIR / METADATA_FILE).read_text()))
    index, meta, _ = read_index(str(name))
    kind = "shapes" if meta else "latent" if "vae" in index else "pixel"
    return PriorInfo(str(name), kind, meta)
