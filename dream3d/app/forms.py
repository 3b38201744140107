"""From the page's fields to a validated RunConfig (generation and DDS editing). No gradio here.

Order of precedence, lowest first: schema defaults <- configs/<method>.yaml <- the advanced editor's YAML <- the
form fields (prior, steps, seed, guidance scale) <- the prompt (always data, never parsed). The result passes the
operator's `PagePolicy` (offered priors, page limits, no server paths) before anything is queued.
"""

from __future__ import annotations

import math
from pathlib import Path

from dream3d.app.policy import PagePolicy
from dream3d.config import RunConfig, apply_yaml_text, load_config
from dream3d.errors import ConfigError, PromptError, safe_text
from dream3d.guidance.registry import methods as guidance_methods
from dream3d.pipeline import generation_config
from dream3d.priors.kinds import inspect_prior
from dream3d.recipes import recipe_path

EDITOR_HELP = """\
# Advanced settings: YAML applied on top of the method's recipe (configs/<method>.yaml) and checked against the
# schema (dream3d/config.py, every key spelled out in configs/cpu-default.yaml). The fields above win over this.
# Examples:
# render: {height: 64, width: 64}
# export: {resolution: 128, turntable: false}
"""
EDIT_EDITOR_HELP = EDITOR_HELP.replace("the method's recipe (configs/<method>.yaml)",
                                      "the source run's config and configs/dds-edit.yaml")


def methods() -> dict[str, Path]:
    """Generation methods (the guidance registry's, less the editing ones) and their shipped recipes; a missing
    recipe is a ConfigError."""
    return {name: recipe_path(spec.recipe) for name, spec in guidance_methods().items() if not spec.editing}


def method_config(method: str, prior: str | None = "", policy: PagePolicy | None = None) -> RunConfig:
    """The recipe of `method` for `prior`: configs/<method>.yaml for the bundled prior (and shapes-world ones), the
    prior kind's recipe (`sd-<method>`, `if-<method>`: `dream3d.pipeline.generation_config`) for the others;
    ConfigError for an unknown method or a prior the policy does not offer (before anything is looked up),
    ModelLoadError for an offered prior that cannot be read."""
    table = methods()
    if method not in table:
        if method in guidance_methods():
            raise ConfigError(f"{method} edits a finished run; use the Edit tab")
        raise ConfigError(f"unknown method '{safe_text(method, 60)}'; choose one of {', '.join(table)}")
    prior = (policy or PagePolicy()).prior_value(prior)
    if prior and inspect_prior(prior).kind != "shapes":
        cfg, _ = generation_config(None, [f"prior={prior}", f"guidance.method={method}"])
        return cfg
    cfg = load_config(table[method])
    cfg.guidance.method = method
    return cfg


def edit_defaults() -> tuple[int, float]:
    """(steps, DDS guidance scale) of configs/dds-edit.yaml: the Edit tab's defaults."""
    cfg = load_config(recipe_path("dds-edit"))
    return cfg.steps, cfg.guidance.guidance_scale


def _number(value, name: str, integer: bool) -> float | int | None:
    """A form number (None/'' = not given); ConfigError for non-numbers, NaN or (integers) fractions."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {safe_text(repr(value), 60)}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{name} must be a finite number, got {safe_text(repr(value), 60)}")
    if integer:
        if x != int(x):
            raise ConfigError(f"{name} must be a whole number, got {safe_text(repr(value), 60)}")
        return int(x)
    return x


def _check_prompt(prompt: str | None, example: str = "a red cube") -> str:
    if prompt is None or not prompt.strip():
        raise PromptError(f"the prompt is empty; try for example '{example}'")
    return prompt.strip()


def _apply_fields(cfg: RunConfig, steps, seed, guidance_scale) -> RunConfig:
    steps = _number(steps, "steps", True)
    seed = _number(seed, "seed", True)
    scale = _number(guidance_scale, "guidance scale", False)
    over = [f"{k}={v}" for k, v in (("steps", steps), ("seed", seed), ("guidance.guidance_scale", scale))
            if v is not None]
    return load_config(None, over, base=cfg) if over else cfg


def generate_config(prompt: str | None, method: str = "sds", prior: str | None = "", steps=None, seed=None,
                    guidance_scale=None, config_text: str = "", policy: PagePolicy | None = None) -> RunConfig:
    """The validated RunConfig of a generation, within `policy` (default: the bundled prior, PAGE_LIMITS);
    Dream3DError (one line) for any user mistake."""
    policy = policy or PagePolicy()
    prompt = _check_prompt(prompt)
    prior = policy.prior_value(prior)
    cfg = method_config(method, prior, policy)
    if config_text and config_text.strip():
        cfg = apply_yaml_text(cfg, config_text, "the advanced config")
        cfg.guidance.method = method
    cfg.prior = prior if prior else cfg.prior
    cfg = _apply_fields(cfg, steps, seed, guidance_scale)
    cfg.prompt, cfg.name = prompt, ""
    policy.check(cfg)
    return cfg


def edit_config_from_form(source_dir: Path, prompt: str | None, source_prompt: str | None = "", steps=None,
                          guidance_scale=None, config_text: str = "", policy: PagePolicy | None = None) -> RunConfig:
    """The validated RunConfig of a DDS edit of the run in `source_dir`, within `policy`; Dream3DError for user
    mistakes."""
    from dream3d.pipeline import edit_config

    prompt = _check_prompt(prompt, "a blue cube")
    cfg = edit_config(source_dir, prompt, (source_prompt or "").strip() or None)
    if config_text and config_text.strip():
        keep = (cfg.prompt, cfg.guidance.dds.source_prompt, cfg.edit_source)
        cfg = apply_yaml_text(cfg, config_text, "the advanced config")
        cfg.prompt, cfg.guidance.dds.source_prompt, cfg.edit_source = keep
        cfg.guidance.method, cfg.name = "dds", ""
    cfg = _apply_fields(cfg, steps, None, guidance_scale)
    (policy or PagePolicy()).check(cfg, edit_source=cfg.edit_source)
    return cfg


def describe(cfg: RunConfig) -> str:
    """One line summarising a config (for the editor's check button)."""
    r, e = cfg.render, cfg.export
    return (f"{cfg.guidance.method}, {cfg.steps} steps, seed {cfg.seed}, scale {cfg.guidance.guidance_scale:g}, "
            f"prior {cfg.prior or 'bundled'}, renders {r.height}x{r.width} x{r.batch_size}, device {cfg.device}, "
            f"export {'off' if not e.enabled else f'{e.resolution}^3 grid, {e.texture_size}px texture'}")


__all__ = ["EDITOR_HELP", "EDIT_EDITOR_HELP", "describe", "edit_config_from_form", "edit_defaults",
           "generate_config", "method_config", "methods"]
