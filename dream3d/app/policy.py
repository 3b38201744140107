"""What a page may ask of the server: the priors the operator offers (`--allow-prior`), the operator's limits on the
sizes that cost time and memory (`--max-steps`, `--limit KEY=MAX`), and no server path in a page's settings.
No gradio here.

Every config from the page passes the schema's validation (`dream3d.config.validate_run`, with its upper bounds),
then `PagePolicy.check`: each stage the run would train (a two-stage recipe's mesh stage included, built from its
`mesh.refine_overrides` as the pipeline will build it) stays within the page limits, uses an offered prior, and
names no folder other than those the app itself sets (`init_from` of a mesh stage, `edit_source` of an edit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping

from dream3d.config import BOUNDS, RunConfig, check_range, get, validate_run
from dream3d.errors import ConfigError, safe_text

BUNDLED_NAMES = ("", "bundled", "shapes", "default")  # what the prior field may say for the bundled prior
# the page's upper limits (an operator changes them with --max-steps and --limit KEY=MAX): every shipped recipe
# fits, the stage configs of sd-two-stage (512x512 renders, a 128 tet grid) included
PAGE_LIMITS: dict[str, float] = {
    "steps": 25_000, "mesh.refine_steps": 25_000,
    "geometry.log2_hashmap_size": 20, "geometry.n_features_per_level": 4, "geometry.mlp_width": 256,
    "render.height": 512, "render.width": 512, "render.batch_size": 8, "render.samples_per_ray": 512,
    "render.occupancy_resolution": 128,
    "export.resolution": 512, "export.texture_size": 2048, "export.turntable_frames": 240,
    "export.turntable_resolution": 512,
    "mesh.tet_resolution": 128, "mesh.carve_views": 256, "mesh.carve_resolution": 512,
    "mesh.albedo_fit_steps": 5000, "guidance.vsd.lora_rank": 64, "guidance.cfd.subsamples": 16,
}
MESH_SOURCE = "<the NeRF stage of this run>"  # init_from of a mesh stage checked before its NeRF stage exists


def page_limits(max_steps: int | None = None, items: Iterable[str] = ()) -> dict[str, float]:
    """PAGE_LIMITS with `--max-steps` (each stage's steps) and `--limit KEY=MAX` items applied; ConfigError (one
    line) for a key without bounds or a maximum outside the key's schema range."""
    limits = dict(PAGE_LIMITS)
    pairs = [("steps", max_steps), ("mesh.refine_steps", max_steps)] if max_steps is not None else []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in BOUNDS:
            raise ConfigError(f"--limit takes KEY=MAX with a numeric config key, e.g. render.height=256; got "
                              f"{safe_text(item, 60)!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"--limit {safe_text(key)}: the maximum must be a number; got "
                              f"{safe_text(raw, 60)!r}") from None
        pairs.append((key, value))
    for key, value in pairs:
        check_range(key, value, f"the limit of '{key}'")
        limits[key] = int(value) if float(value).is_integer() else value
    return limits


@dataclass(frozen=True)
class PagePolicy:
    """The operator's choices for one app: offered priors (besides the bundled one) and page limits."""

    allowed_priors: tuple[str, ...] = ()
    limits: Mapping[str, float] = field(default_factory=lambda: dict(PAGE_LIMITS))

    def offered(self) -> str:
        """The priors the page may name, in words."""
        return ", ".join(["bundled", *self.allowed_priors])

    def prior_value(self, text: str | None) -> str:
        """The prior field (or a config's `prior`) as a config value: "" for the bundled prior, an offered prior as
        given; anything else a ConfigError whose message does not depend on what the server holds (nothing is
        looked up)."""
        text = (text or "").strip()
        if text.lower() in BUNDLED_NAMES:
            return ""
        if text in self.allowed_priors:
            return text
        raise self._not_offered(text)

    def _not_offered(self, prior: str) -> ConfigError:
        return ConfigError(f"prior '{safe_text(prior, 60)}' is not offered by this app; choose one of: "
                           f"{safe_text(self.offered())} (the operator offers more with --allow-prior)")

    def check(self, cfg: RunConfig, edit_source: str = "") -> None:
        """ConfigError (one line) unless `cfg` may run from the page: valid with the schema's bounds, and each of
        its stages within the limits, with an offered prior and no folder the app did not set. edit_source: the
        run folder an edit starts from ("" for a generation)."""
        from dream3d.pipeline import mesh_stage_of

        validate_run(cfg)
        stages = [("", cfg, "")]
        if cfg.stage == "nerf" and cfg.mesh.refine_steps > 0:
            stages.append((" (in the mesh stage)", mesh_stage_of(cfg, MESH_SOURCE), MESH_SOURCE))
        for where, stage, init_from in stages:
            if stage.prior and stage.prior not in self.allowed_priors:
                raise self._not_offered(stage.prior)
            if stage.init_from != init_from:
                raise ConfigError(f"init_from names a folder on the server{where}; the page cannot set it (a "
                                  "two-stage recipe starts its mesh stage from its own NeRF run)")
            if stage.edit_source != edit_source:
                raise ConfigError(f"edit_source names a folder on the server{where}; the page cannot set it (the "
                                  "Edit tab picks the run to edit)")
            for key, hi in self.limits.items():
                value = get(stage, key)
                if isinstance(value, (int, float)) and not (math.isfinite(value) and value <= hi):
                    raise ConfigError(f"config key '{key}' is at most {hi:g} in this app{where}; got "
                                      f"{safe_text(value, 40)} (the operator sets the limits)")


__all__ = ["BUNDLED_NAMES", "PAGE_LIMITS", "PagePolicy", "page_limits"]
