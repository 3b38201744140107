"""Typed run configuration: dataclass schema, YAML files, `key=value` overrides, validation.

Plain YAML (PyYAML) + dataclasses rather than OmegaConf: OmegaConf resolves `${...}` inside strings (a prompt
could read environment variables through `${oc.env:...}`), and the schema checks below are all we need.

The schema below is the CPU default (what `dream3d generate "PROMPT"` runs with no --config). YAML files in
`configs/` override parts of it, then `key=value` overrides apply. Unknown keys are errors that name the key and
suggest the closest valid one. User text (prompts) is data: OmegaConf interpolation is never resolved, so
`${...}` in a prompt stays literal.

The guidance section is built from `dream3d.guidance.registry`: the shared settings, then one section per
method with settings of its own (`guidance: {method: vsd, vsd: {lora_rank: 4}}`). Configs written before the
sections existed spell those settings flat (`guidance.vsd_lora_rank`, `guidance.source_prompt`, see
`FLAT_GUIDANCE_KEYS`); they still load, in files, saved run configs and overrides, with one deprecation line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dream3d.cameras import AZIMUTH_RANGE, DISTANCE, ELEVATION_RANGE, FOV_DEG
from dream3d.errors import ConfigError
from dream3d.guidance.registry import methods as guidance_methods
from dream3d.guidance.timesteps import SCHEDULES
from dream3d.guidance.weighting import WEIGHTINGS
from dream3d.stages import stage_names

log = logging.getLogger("dream3d")


@dataclass
class GeometryConfig:
    bound: float = 1.0  # the object lives in [-bound, bound]^3
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.4472692374403782
    encoding_backend: str = "auto"  # auto | cpp | cuda | tcnn | torch
    mlp_width: int = 64
    blob_density: float = 10.0
    blob_radius: float = 0.5
    normal_type: str = "finite_difference"  # finite_difference | forward_difference | analytic


@dataclass
class RenderConfig:
    height: int = 32
    width: int = 32
    batch_size: int = 4  # views per optimisation step
    samples_per_ray: int = 64
    occupancy_resolution: int = 32
    occupancy_update_every: int = 16
    backend: str = "auto"  # auto | torch | nerfacc
    # DreamFusion-style random shading: probabilities of albedo / lambertian / textureless per step
    shading_probs: list[float] = field(default_factory=lambda: [0.2, 0.8, 0.0])
    shading_warmup_steps: int = 100  # albedo only at the start, so colour is found before shape details
    background: str = "white"  # white | mlp


@dataclass
class CameraConfig:
    """Ranges of the training cameras (degrees, world units); defaults are dream3d.cameras' conventions."""

    elevation_range: list[float] = field(default_factory=lambda: [float(v) for v in ELEVATION_RANGE])
    azimuth_range: list[float] = field(default_factory=lambda: [float(v) for v in AZIMUTH_RANGE])
    distance_range: list[float] = field(default_factory=lambda: [float(DISTANCE)] * 2)
    fov_range: list[float] = field(default_factory=lambda: [float(FOV_DEG)] * 2)


@dataclass
class SharedGuidanceConfig:
    """The guidance settings every method reads; `GuidanceConfig` adds the methods' own sections."""

    method: str = "sds"  # a registered method: dream3d.guidance.registry.methods()
    guidance_scale: float = 10.0  # diffusers form: eps_u + s (eps_c - eps_u)
    weighting: str = "sds"  # sds | uniform | fantasia3d | lambda
    t_min: float = 0.02
    t_max: float = 0.98
    t_schedule: str = "step"  # constant | step | sqrt | linear
    t_max_end: float = 0.5  # t_max after annealing (step: after t_anneal_fraction of the run)
    t_anneal_fraction: float = 0.5
    grad_clip: float = 0.0  # element-wise clamp of the guidance gradient; 0 disables
    view_dependent: bool = True
    negative_prompt: str = ""


def _guidance_config() -> type:
    """GuidanceConfig: `SharedGuidanceConfig` plus a section `<name>` (the method's settings dataclass) for each
    registered method that has settings of its own."""
    sections = [(name, spec.settings, field(default_factory=spec.settings))
                for name, spec in guidance_methods().items() if dataclasses.fields(spec.settings)]
    cls = dataclasses.make_dataclass("GuidanceConfig", sections, bases=(SharedGuidanceConfig,))
    cls.__module__ = __name__
    cls.__doc__ = ("The guidance section: the shared settings, then one section per method with settings of its own "
                   f"({', '.join(name for name, _, _ in sections)}).")
    return cls


GuidanceConfig = _guidance_config()
# flat keys of configs written before the method sections existed -> their key inside `guidance`
FLAT_GUIDANCE_KEYS = {
    "vsd_lora_rank": "vsd.lora_rank", "vsd_lora_lr": "vsd.lora_lr", "vsd_camera_dropout": "vsd.camera_dropout",
    "vsd_lora_guidance_scale": "vsd.lora_guidance_scale", "nfsd_threshold": "nfsd.threshold",
    "ssd_threshold": "ssd.threshold", "ssd_rescale": "ssd.rescale", "cfd_subsamples": "cfd.subsamples",
    "cfd_voxel_size": "cfd.voxel_size", "cfd_reinject": "cfd.reinject", "source_prompt": "dds.source_prompt",
}


@dataclass
class OptimConfig:
    lr: float = 0.01
    encoding_lr_multiplier: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-15
    weight_decay: float = 0.0


@dataclass
class LossConfig:
    opacity_sparsity: float = 0.0  # mean opacity penalty (fights halos)
    opacity_entropy: float = 0.0  # binary entropy of opacity (pushes towards 0/1)
    orientation: float = 0.0  # DreamFusion orientation loss on normals facing away from the camera


@dataclass
class ExportConfig:
    enabled: bool = True
    formats: list[str] = field(default_factory=lambda: ["glb", "obj"])
    resolution: int = 256
    texture_size: int = 1024
    turntable: bool = True
    turntable_frames: int = 60  # frames per full turn
    turntable_resolution: int = 256  # pixels per side
    turntable_fps: int = 15  # frames per second: 60 frames at 15 fps = one turn in 4 s


@dataclass
class MeshConfig:
    """The mesh stage (DMTet + rasterizer; `stage: mesh`, `dream3d refine`) and two-stage recipes."""

    tet_resolution: int = 64  # tet-grid cubes per axis (6 tets each)
    deform_fraction: float = 0.25  # largest vertex offset, fraction of a grid cell
    backend: str = "auto"  # rasterizer: auto | torch | nvdiffrast
    sdf_lr: float = 0.0005  # world units per Adam step (the sdf is a signed distance)
    deform_lr: float = 0.001
    albedo_fit_steps: int = 300  # fitting the albedo field to the NeRF's before the mesh stage starts
    carve_views: int = 96  # NeRF silhouettes that carve (and calibrate) the initial surface; 0: level set only
    carve_resolution: int = 128  # side in pixels of those silhouettes
    sdf_regularizer: float = 0.0  # nvdiffrec's sign cross-entropy on crossed grid edges
    normal_consistency: float = 0.0  # 1 - cos between neighbouring face normals
    sdf_anchor: float = 0.1  # pull of the sdf towards its start near the surface (DMTetGeometry.anchor_penalty)
    # two-stage recipes: after a NeRF run, run the mesh stage for this many steps (0 = NeRF only) with these
    # key=value overrides on top of configs/mesh.yaml
    refine_steps: int = 0
    refine_overrides: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    prompt: str = "a red cube"
    prior: str = ""  # hub id or local folder; empty = the bundled shapes prior
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    steps: int = 1200
    checkpoint_every: int = 200
    preview_every: int = 100
    name: str = ""  # run folder name; empty = derived from the prompt
    edit_source: str = ""  # `dream3d edit`: the source run folder (its scene is frozen and edited by DDS)
    stage: str = "nerf"  # a registered stage (dream3d.stages): nerf (hash-grid NeRF) | mesh (DMTet, from a NeRF run)
    init_from: str = ""  # mesh stage: the NeRF run folder it starts from (`dream3d refine` sets it)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)


CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "mesh.backend": ("auto", "torch", "nvdiffrast"),
    "geometry.encoding_backend": ("auto", "cpp", "cuda", "tcnn", "torch"),
    "geometry.normal_type": ("finite_difference", "forward_difference", "analytic"),
    "render.backend": ("auto", "torch", "nerfacc"),
    "render.background": ("white", "mlp"),
    "guidance.weighting": WEIGHTINGS,
    "guidance.t_schedule": SCHEDULES,
}


def _keys(cls, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        t = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(t):
            out += _keys(t, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def valid_keys() -> list[str]:
    """Every dotted config key, e.g. 'guidance.guidance_scale'."""
    return _keys(RunConfig)


def _unknown_key_error(key: str) -> ConfigError:
    keys = valid_keys()
    tail = {k.split(".")[-1]: k for k in keys}
    name = key.split(".")[-1]
    if name in tail:  # right name, wrong section ("guidance_scale" -> "guidance.guidance_scale")
        close = [tail[name]]
    else:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _coerce(value, typ, key: str):
    """Check/convert one value to the schema type (int->float allowed; lists element-wise)."""
    origin = typing.get_origin(typ)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        (inner,) = typing.get_args(typ)
        return [_coerce(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
    if typ is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' expects text, got {value!r}")
    raise TypeError(f"unsupported schema type {typ} for {key}")


def _apply(obj, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in hints:
            raise _unknown_key_error(key)
        t = hints[k]
        if dataclasses.is_dataclass(t):
            _apply(getattr(obj, k), v, key + ".")
        else:
            setattr(obj, k, _coerce(v, t, key))


def _parse_override(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text as is
    if isinstance(value, (dict,)) or value is None:
        value = raw
    return key, value


def _nest(key: str, value) -> dict:
    d: dict = value
    for part in reversed(key.split(".")):
        d = {part: d}
    return d


def _nested_key(key: str) -> str:
    """The current spelling of a dotted key: 'guidance.vsd_lora_rank' -> 'guidance.vsd.lora_rank', others as is."""
    section, _, name = key.partition(".")
    return f"guidance.{FLAT_GUIDANCE_KEYS[name]}" if section == "guidance" and name in FLAT_GUIDANCE_KEYS else key


def _nest_flat_guidance(data: dict, flat: list[str]) -> dict:
    """`data` (a config mapping) with flat guidance keys moved into their method sections; each moved key is
    appended to `flat`. A setting given both ways in one mapping is a ConfigError naming both keys."""
    section = data.get("guidance") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not section.keys() & FLAT_GUIDANCE_KEYS.keys():
        return data
    section = dict(section)
    for old in [k for k in section if k in FLAT_GUIDANCE_KEYS]:
        method, name = FLAT_GUIDANCE_KEYS[old].split(".")
        nested = section.get(method) or {}
        if not isinstance(nested, dict):
            raise ConfigError(f"config section 'guidance.{method}' must be a mapping, got {nested!r}")
        if name in nested:
            raise ConfigError(f"both 'guidance.{old}' and 'guidance.{method}.{name}' are set; keep only "
                              f"'guidance.{method}.{name}'")
        section[method] = {**nested, name: section.pop(old)}
        flat.append(f"guidance.{old}")
    return {**data, "guidance": section}


def _flat_key_notice(flat: dict[str, list[str]]) -> None:
    """One deprecation line for all the flat guidance keys a load met (`flat`: source -> keys)."""
    keys = [k for found in flat.values() for k in found]
    if keys:
        moves = ", ".join(f"{k} -> {_nested_key(k)}" for k in dict.fromkeys(keys))
        where = " and ".join(source for source, found in flat.items() if found)
        log.warning("flat guidance keys are deprecated (in %s); nest them in their method's section: %s", where,
                    moves)


def load_config(config_file: str | Path | None = None, overrides: typing.Sequence[str] = (),
                base: RunConfig | None = None) -> RunConfig:
    """Defaults (or a copy of `base`) <- YAML file <- `key=value` overrides, validated. Raises ConfigError.

    Flat guidance keys (`FLAT_GUIDANCE_KEYS`) are read as their nested keys, with one deprecation line per load;
    one setting given both ways, in the file or among the overrides, is a ConfigError naming both keys.
    """
    cfg = copy.deepcopy(base) if base is not None else RunConfig()
    flat: dict[str, list[str]] = {str(config_file): [], "the overrides": []}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        _apply(cfg, _nest_flat_guidance(_parse_yaml(path.read_text(), str(path)), flat[str(config_file)]))
    given: dict[str, str] = {}  # nested key -> the key as the override spelled it
    for item in overrides:
        key, value = _parse_override(item)
        if key.endswith("prompt") and not isinstance(value, str):
            value = item.split("=", 1)[1]  # prompts are text, whatever they look like
        nested = _nested_key(key)
        if given.setdefault(nested, key) != key:
            raise ConfigError(f"both '{given[nested]}' and '{key}' are given; keep only '{nested}'")
        if nested != key:
            flat["the overrides"].append(key)
        _apply(cfg, _nest(nested, value))
    _flat_key_notice(flat)
    validate(cfg)
    return cfg


def _parse_yaml(text: str, source: str) -> dict:
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {source}: {str(e).splitlines()[0]}") from None


def apply_yaml_text(cfg: RunConfig, text: str, source: str = "the config") -> RunConfig:
    """A validated copy of `cfg` with the YAML mapping `text` applied (the app's config editor). Raises ConfigError."""
    out = copy.deepcopy(cfg)
    flat: list[str] = []
    _apply(out, _nest_flat_guidance(_parse_yaml(text, source), flat))
    _flat_key_notice({source: flat})
    validate(out)
    return out


def get(cfg: RunConfig, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: RunConfig) -> None:
    """Value checks beyond types; raises ConfigError naming the key."""
    for key, allowed in {**CHOICES, "guidance.method": tuple(guidance_methods()), "stage": stage_names()}.items():
        v = get(cfg, key)
        if v not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}; got {v!r}")
    positive = ["steps", "render.height", "render.width", "render.batch_size", "render.samples_per_ray",
                "render.occupancy_resolution", "checkpoint_every", "preview_every", "export.resolution",
                "export.texture_size", "geometry.n_levels", "geometry.mlp_width", "mesh.tet_resolution"]
    for key in positive:
        if get(cfg, key) <= 0:
            raise ConfigError(f"config key '{key}' must be positive; got {get(cfg, key)!r}")
    if cfg.stage == "mesh" and not cfg.init_from:
        raise ConfigError("the mesh stage starts from a finished NeRF run: use dream3d refine RUN_DIR")
    if cfg.stage == "mesh" and cfg.edit_source:
        raise ConfigError("dream3d edit works on NeRF runs; edit the NeRF run, then refine the edit")
    if cfg.mesh.refine_steps < 0:
        raise ConfigError(f"config key 'mesh.refine_steps' must be >= 0; got {cfg.mesh.refine_steps}")
    g = cfg.guidance
    if not (0.0 <= g.t_min < g.t_max <= 1.0):
        raise ConfigError(f"guidance.t_min/t_max must satisfy 0 <= t_min < t_max <= 1; got {g.t_min}, {g.t_max}")
    probs = cfg.render.shading_probs
    if len(probs) != 3 or any(p < 0 for p in probs) or sum(probs) <= 0:
        raise ConfigError("render.shading_probs must be 3 non-negative numbers (albedo, lambertian, textureless)")
    for fmt in cfg.export.formats:
        if fmt not in ("glb", "obj"):
            raise ConfigError(f"export.formats: unknown format {fmt!r}; use glb and/or obj")
    for key in ("camera.elevation_range", "camera.azimuth_range", "camera.distance_range", "camera.fov_range"):
        v = get(cfg, key)
        if len(v) != 2 or v[0] > v[1]:
            raise ConfigError(f"config key '{key}' must be [low, high] with low <= high; got {v!r}")


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (reloadable with `load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
