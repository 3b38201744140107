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

Validation (`validate`, run by every load, the app's `apply_yaml_text` and batch) checks types, choices, list
lengths, finite numbers (no setting documents NaN or inf), the range of every number (`BOUNDS`: the sizes that
cost memory or time have upper bounds, named in the message) and cross-field rules; `validate_run` adds the
rules that only a run can break (DDS needs an edit source). YAML numbers load in every usual spelling (`1e-3`,
`.5`, `1_000`, `5E+2`); a YAML text is refused with one line when it is larger than `MAX_YAML_CHARS`, nests
deeper than `MAX_YAML_DEPTH` or expands (through aliases) to more than `MAX_YAML_NODES` values.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dream3d.cameras import AZIMUTH_RANGE, DISTANCE, ELEVATION_RANGE, FOV_DEG
from dream3d.errors import ConfigError, safe_text
from dream3d.fileio import read_text, write_bytes_atomic
from dream3d.guidance.registry import methods as guidance_methods
from dream3d.guidance.timesteps import SCHEDULES
from dream3d.guidance.weighting import WEIGHTINGS
from dream3d.priors.memory import PRECISIONS, MemoryOptions
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
    # [start_step, start_weight, end_weight, end_step]: the orientation weight ramps linearly (threestudio's
    # lambda_orient schedule form); [] keeps `orientation` constant
    orientation_ramp: list[float] = field(default_factory=list)


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
class GaussianConfig:
    """The Gaussian stage (`stage: gaussian`): 3D Gaussians splatted by `dream3d.render.splat`, densified and
    pruned on a schedule (`dream3d.geometry.gaussians`); defaults are DreamGaussian's (configs/text.yaml at commit
    69a3c70), its densification window and interval excepted (see configs/gaussian.yaml)."""

    num_points: int = 5000  # initial Gaussians, uniform in a ball
    init_radius: float = 0.5  # of that ball (world units)
    init_opacity: float = 0.1
    color: str = "sigmoid"  # sigmoid (RGB = sigmoid(feature)) | sh (spherical harmonics, 3DGS convention)
    sh_degree: int = 0  # 0 | 1 (color: sh)
    backend: str = "auto"  # rasterizer: auto | cpp | gsplat | torch
    eps2d: float = 0.3  # low-pass dilation of the projected covariances (pixels^2)
    near_plane: float = 0.01  # Gaussians nearer to the camera are culled (world units)
    position_lr: float = 0.01  # means: exponential decay from position_lr to position_lr_final ...
    position_lr_final: float = 0.0002
    position_lr_steps: int = 300  # ... over this many steps, then constant
    scale_lr: float = 0.005  # log-scales
    rotation_lr: float = 0.005  # quaternions
    opacity_lr: float = 0.05  # opacity logits
    color_lr: float = 0.01  # colour features (degree-1 SH: color_lr / 20, as 3DGS)
    densify_from: int = 100  # densify and prune at steps densify_from, +densify_every, ... <= densify_until
    densify_until: int = 300
    densify_every: int = 100
    densify_grad_threshold: float = 0.01  # mean view-space gradient (NDC units) that densifies a Gaussian
    percent_dense: float = 0.01  # Gaussians larger than percent_dense * scene_extent split, smaller ones clone
    scene_extent: float = 4.0
    prune_opacity: float = 0.01  # Gaussians below this opacity are removed when densifying
    prune_world_fraction: float = 0.1  # ... and those larger than this fraction of scene_extent (0: off)
    prune_screen_fraction: float = 0.0  # ... and those larger than this fraction of the image side (0: off)
    opacity_reset_every: int = 0  # steps between opacity resets to 0.01 (0: never)
    max_gaussians: int = 100000  # no densification beyond this count
    texture_refine_steps: int = 0  # export: Adam steps fitting the baked texture to Gaussian renders (0: off)
    texture_refine_views: int = 16  # views of that fit
    texture_refine_resolution: int = 128  # their side in pixels


@dataclass
class RunConfig:
    prompt: str = "a red cube"
    prior: str = ""  # hub id or local folder; empty = the bundled shapes prior
    prior_memory: MemoryOptions = field(default_factory=MemoryOptions)  # the prior's precision, slicing, offload
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    steps: int = 1200
    checkpoint_every: int = 200
    preview_every: int = 100
    name: str = ""  # run folder name; empty = derived from the prompt
    edit_source: str = ""  # `dream3d edit`: the source run folder (its scene is frozen and edited by DDS)
    stage: str = "nerf"  # a registered stage (dream3d.stages): nerf (hash-grid NeRF) | mesh (DMTet, from a NeRF run)
    # | gaussian (3D Gaussians, splatted)
    init_from: str = ""  # mesh stage: the NeRF run folder it starts from (`dream3d refine` sets it)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    gaussian: GaussianConfig = field(default_factory=GaussianConfig)


CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "prior_memory.precision": ("auto", *PRECISIONS),
    "mesh.backend": ("auto", "torch", "nvdiffrast"),
    "geometry.encoding_backend": ("auto", "cpp", "cuda", "tcnn", "torch"),
    "geometry.normal_type": ("finite_difference", "forward_difference", "analytic"),
    "render.backend": ("auto", "torch", "nerfacc"),
    "render.background": ("white", "mlp"),
    "gaussian.color": ("sigmoid", "sh"),
    "gaussian.backend": ("auto", "cpp", "gsplat", "torch"),
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


def _show(value) -> str:
    """A value as a message shows it: its repr, control characters escaped, at most 200 characters."""
    return safe_text(repr(value))


def _coerce(value, typ, key: str):
    """Check/convert one value to the schema type (int->float allowed, an integral float such as 1e3 -> int;
    lists element-wise)."""
    origin = typing.get_origin(typ)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {_show(value)}")
        (inner,) = typing.get_args(typ)
        return [_coerce(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true/false, got {_show(value)}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' expects an integer, got {_show(value)}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"config key '{key}' expects a number, got one with {len(str(value))} digits") \
                    from None
        raise ConfigError(f"config key '{key}' expects a number, got {_show(value)}")
    if typ is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' expects text, got {_show(value)}")
    raise TypeError(f"unsupported schema type {typ} for {key}")


def _apply(obj, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {_show(data)}")
    hints = typing.get_type_hints(type(obj))
    for k, v in data.items():
        key = f"{prefix}{k}"
        if not isinstance(k, str) or k not in hints:
            raise _unknown_key_error(safe_text(key))
        t = hints[k]
        if dataclasses.is_dataclass(t):
            _apply(getattr(obj, k), v, key + ".")
        else:
            setattr(obj, k, _coerce(v, t, key))


def _parse_override(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise ConfigError(f"override '{safe_text(item)}' is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{safe_text(item)}' has an empty key")
    try:
        value = _parse_yaml(raw, f"the value of {safe_text(key)}", mapping=False) if raw.strip() else ""
    except ConfigError:
        if len(raw) > MAX_YAML_CHARS:
            raise
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
            raise ConfigError(f"config section 'guidance.{method}' must be a mapping, got {_show(nested)}")
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
            raise ConfigError(f"config file not found: {safe_text(path)}")
        try:
            _apply(cfg, _nest_flat_guidance(_parse_yaml(read_text(path, "config file"), str(path)),
                                            flat[str(config_file)]))
        except ConfigError as e:
            raise ConfigError(e.args[0] if str(path) in e.args[0] else f"{safe_text(path)}: {e}") from None
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


MAX_YAML_CHARS = 1_000_000  # characters of one YAML text (a config file, the app's editor, one override)
MAX_YAML_DEPTH = 32  # nested mappings/lists, aliases expanded
MAX_YAML_NODES = 100_000  # values, aliases expanded (a YAML "billion laughs" is refused before it expands)
_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads the YAML 1.2 floats YAML 1.1 leaves as text (`1e-3`, `5E+2`)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def _check_yaml_events(text: str, source: str) -> None:
    """Refuse a YAML text that nests deeper than MAX_YAML_DEPTH before anything is built from it (the parser
    keeps its own stack, so this costs no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{source} nests deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_yaml_size(root: yaml.Node, source: str) -> None:
    """Refuse a composed YAML document that would expand (aliases followed) to more than MAX_YAML_NODES values,
    deeper than MAX_YAML_DEPTH, or into itself; counted per distinct node, so nothing is expanded."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    visiting: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in visiting:
            raise ConfigError(f"{source} holds an alias that contains itself")
        visiting.add(id(node))
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        count, depth = 1, 0
        for child in children:
            c, d = measure(child)
            count, depth = count + c, max(depth, d)
            if count > MAX_YAML_NODES:
                raise ConfigError(f"{source} expands to more than {MAX_YAML_NODES} values (YAML aliases?)")
        depth += isinstance(node, yaml.CollectionNode)
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{source} nests deeper than {MAX_YAML_DEPTH} levels (YAML aliases included)")
        visiting.discard(id(node))
        sizes[id(node)] = (count, depth)
        return count, depth

    measure(root)


def _parse_yaml(text: str, source: str, mapping: bool = True):
    """The YAML `text` ({} when empty), bounded in size, depth and expansion; ConfigError naming `source`.
    mapping: the document must be a mapping (a config), else any value (an override's)."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"{source} is too large ({len(text)} characters; at most {MAX_YAML_CHARS})")
    try:
        _check_yaml_events(text, source)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {} if mapping else None
            _check_yaml_size(node, source)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"cannot parse {source}: {safe_text(first)}") from None
    except RecursionError:
        raise ConfigError(f"{source} nests too deeply") from None
    if mapping and data is None:
        return {}
    return data


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


@dataclass(frozen=True)
class Range:
    """The allowed values of a number: lo..hi, each end included unless `open_lo` / `open_hi`."""

    lo: float
    hi: float
    open_lo: bool = False
    open_hi: bool = False

    def __contains__(self, v: float) -> bool:
        return ((v > self.lo) if self.open_lo else (v >= self.lo)) and ((v < self.hi) if self.open_hi else
                                                                      (v <= self.hi))

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"
        return f"{'(' if self.open_lo else '['}{num(self.lo)}, {num(self.hi)}{')' if self.open_hi else ']'}"


MAX_STEPS = 1_000_000
MAX_PROMPT_CHARS = 1000  # characters of a prompt; a prior's own limit (tokens) is checked when it encodes
STEP_COUNT = Range(1, MAX_STEPS)
WEIGHT = Range(0, 1e6)  # loss weights and other non-negative factors
FRACTION = Range(0, 1)
LR = Range(0, 10)
# every number of the schema (each element of a list of numbers): its range; sizes that cost memory or time have
# upper bounds (tests/test_hostile_config.py checks that every numeric key is listed)
BOUNDS: dict[str, Range] = {
    "seed": Range(0, 2**63 - 2), "steps": STEP_COUNT, "checkpoint_every": STEP_COUNT,
    "preview_every": STEP_COUNT,
    "geometry.bound": Range(0, 100, open_lo=True), "geometry.n_levels": Range(1, 32),
    "geometry.n_features_per_level": Range(1, 8), "geometry.log2_hashmap_size": Range(4, 24),
    "geometry.base_resolution": Range(1, 4096), "geometry.per_level_scale": Range(1, 8),
    "geometry.mlp_width": Range(1, 1024), "geometry.blob_density": Range(0, 1e4),
    "geometry.blob_radius": Range(0, 100, open_lo=True),
    "render.height": Range(1, 2048), "render.width": Range(1, 2048), "render.batch_size": Range(1, 256),
    "render.samples_per_ray": Range(1, 4096), "render.occupancy_resolution": Range(1, 512),
    "render.occupancy_update_every": STEP_COUNT, "render.shading_probs": FRACTION,
    "render.shading_warmup_steps": Range(0, MAX_STEPS),
    "camera.elevation_range": Range(-90, 90), "camera.azimuth_range": Range(-720, 720),
    "camera.distance_range": Range(0, 1000, open_lo=True), "camera.fov_range": Range(0, 180, True, True),
    "guidance.guidance_scale": Range(0, 1000), "guidance.t_min": FRACTION, "guidance.t_max": FRACTION,
    "guidance.t_max_end": FRACTION, "guidance.t_anneal_fraction": FRACTION, "guidance.grad_clip": WEIGHT,
    "guidance.vsd.lora_rank": Range(1, 256), "guidance.vsd.lora_lr": LR, "guidance.vsd.camera_dropout": FRACTION,
    "guidance.vsd.lora_guidance_scale": Range(0, 1000), "guidance.nfsd.threshold": FRACTION,
    "guidance.ssd.threshold": FRACTION, "guidance.cfd.subsamples": Range(1, 64),
    "guidance.cfd.voxel_size": Range(0, 10), "guidance.cfd.reinject": Range(0, MAX_STEPS),
    "guidance.esd.lora_rank": Range(1, 256), "guidance.esd.lora_lr": LR, "guidance.esd.camera_dropout": FRACTION,
    "guidance.esd.lora_guidance_scale": Range(0, 1000), "guidance.sdi.inversion_steps": Range(1, 1000),
    "guidance.sdi.inversion_guidance_scale": Range(-1000, 1000), "guidance.sdi.inversion_eta": Range(0, 10),
    "guidance.ism.delta_t": FRACTION, "guidance.ism.xs_delta_t": Range(0, 1, open_lo=True),
    "guidance.asd.plus_ratio": Range(0, 10), "guidance.perpneg.negative_scale": Range(0, 100),
    "optim.lr": Range(0, 10, open_lo=True), "optim.encoding_lr_multiplier": Range(0, 1e4),
    "optim.betas": Range(0, 1, open_hi=True), "optim.eps": Range(0, 1, open_lo=True),
    "optim.weight_decay": Range(0, 10),
    "loss.opacity_sparsity": WEIGHT, "loss.opacity_entropy": WEIGHT, "loss.orientation": WEIGHT,
    "loss.orientation_ramp": Range(0, max(MAX_STEPS, WEIGHT.hi)),
    "export.resolution": Range(8, 1024), "export.texture_size": Range(4, 8192),
    "export.turntable_frames": Range(1, 3600), "export.turntable_resolution": Range(8, 2048),
    "export.turntable_fps": Range(1, 120),
    "mesh.tet_resolution": Range(2, 256), "mesh.deform_fraction": FRACTION, "mesh.sdf_lr": LR,
    "mesh.deform_lr": LR, "mesh.albedo_fit_steps": Range(0, 100_000), "mesh.carve_views": Range(0, 1024),
    "mesh.carve_resolution": Range(8, 2048), "mesh.sdf_regularizer": WEIGHT, "mesh.normal_consistency": WEIGHT,
    "mesh.sdf_anchor": WEIGHT, "mesh.refine_steps": Range(0, MAX_STEPS),
    "gaussian.num_points": Range(1, 1_000_000), "gaussian.init_radius": Range(0, 100, open_lo=True),
    "gaussian.init_opacity": Range(0, 1, True, True), "gaussian.sh_degree": Range(0, 1),
    "gaussian.eps2d": Range(0, 100), "gaussian.near_plane": Range(0, 100, open_lo=True),
    "gaussian.position_lr": LR, "gaussian.position_lr_final": LR, "gaussian.position_lr_steps": STEP_COUNT,
    "gaussian.scale_lr": LR, "gaussian.rotation_lr": LR, "gaussian.opacity_lr": LR, "gaussian.color_lr": LR,
    "gaussian.densify_from": Range(0, MAX_STEPS), "gaussian.densify_until": Range(0, MAX_STEPS),
    "gaussian.densify_every": STEP_COUNT, "gaussian.densify_grad_threshold": Range(0, 1e6),
    "gaussian.percent_dense": FRACTION, "gaussian.scene_extent": Range(0, 1000, open_lo=True),
    "gaussian.prune_opacity": FRACTION, "gaussian.prune_world_fraction": Range(0, 100),
    "gaussian.prune_screen_fraction": Range(0, 100), "gaussian.opacity_reset_every": Range(0, MAX_STEPS),
    "gaussian.max_gaussians": Range(1, 10_000_000), "gaussian.texture_refine_steps": Range(0, 100_000),
    "gaussian.texture_refine_views": Range(1, 1024), "gaussian.texture_refine_resolution": Range(16, 2048),
}

# the numeric arguments of the tool commands: their ranges (beyond them: one line, exit 2)
TOOL_BOUNDS: dict[str, dict[str, Range]] = {
    "prior train": {"steps": STEP_COUNT, "resolution": Range(8, 256), "batch": Range(1, 4096), "seed": BOUNDS["seed"],
                    "lr": BOUNDS["optim.lr"], "checkpoint_every": STEP_COUNT, "warmup": Range(0, MAX_STEPS),
                    "max_minutes": Range(0, 1e6, open_lo=True)},
    "prior sample": {"n": Range(1, 256), "steps": Range(1, 1000), "cfg": BOUNDS["guidance.guidance_scale"],
                     "seed": BOUNDS["seed"]},
    "prior eval": {"n": Range(1, 256), "steps": Range(1, 1000), "cfg": BOUNDS["guidance.guidance_scale"],
                   "seed": BOUNDS["seed"]},
    "bench hashgrid": {"points": Range(1, 2**24), "levels": BOUNDS["geometry.n_levels"]},
    "bench splat": {"gaussians": Range(1, 2**24), "size": Range(1, 4096), "views": Range(1, 256),
                    "rounds": Range(1, 1000), "threads": Range(1, 1024)},
}
LIST_LENGTHS = {"optim.betas": (2,), "render.shading_probs": (3,), "camera.elevation_range": (2,),
                "camera.azimuth_range": (2,), "camera.distance_range": (2,), "camera.fov_range": (2,),
                "guidance.cfd.reinject": (0, 1, 4), "loss.orientation_ramp": (0, 4), "export.formats": (1, 2)}
PROMPT_KEYS = ("prompt", "guidance.negative_prompt", "guidance.dds.source_prompt")


def check_range(key: str, value: float, what: str | None = None) -> None:
    """ConfigError unless `value` is a finite number in BOUNDS[key]; `what` names it (default: the key)."""
    _check_in(what or f"config key '{key}'", value, BOUNDS[key])


def check_arguments(command: str, values: dict[str, object]) -> None:
    """ConfigError naming the first numeric argument of the tool `command` ("prior sample", ...) that is outside
    TOOL_BOUNDS[command]; `values`: {argument name: value} (None: not given)."""
    for name, bounds in TOOL_BOUNDS[command].items():
        if values.get(name) is not None:
            _check_in(f"{command} --{name.replace('_', '-')}", values[name], bounds)


def _check_in(name: str, value: float, bounds: Range) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value}")
    if value not in bounds:
        raise ConfigError(f"{name} must be in {bounds}; got {_show(value)}")


def _values(obj, prefix: str = "") -> typing.Iterator[tuple[str, object]]:
    """(dotted key, value) of every setting of a config (dataclass) object."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _values(v, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, v


def check_text(key: str, text: str, limit: int | None = None) -> None:
    """ConfigError unless `text` is valid UTF-8 text (no bytes that were not UTF-8) of at most `limit`
    characters (None: no limit)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"config key '{key}' is not valid UTF-8 text: {safe_text(text)}") from None
    if limit is not None and len(text) > limit:
        raise ConfigError(f"config key '{key}' is {len(text)} characters long (at most {limit}): "
                          f"{safe_text(text, 80)}")


def validate(cfg: RunConfig) -> None:
    """Value checks beyond types (choices, list lengths, finite numbers, BOUNDS, cross-field rules); raises
    ConfigError naming the key, the allowed values and what was given."""
    for key, allowed in {**CHOICES, "guidance.method": tuple(guidance_methods()), "stage": stage_names()}.items():
        v = get(cfg, key)
        if v not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}; got {_show(v)}")
    for key, v in _values(cfg):
        if isinstance(v, str):
            check_text(key, v, MAX_PROMPT_CHARS if key in PROMPT_KEYS else None)
        if isinstance(v, list) and key in LIST_LENGTHS and len(v) not in LIST_LENGTHS[key]:
            n = " or ".join(map(str, LIST_LENGTHS[key]))
            raise ConfigError(f"config key '{key}' must be a list of {n} values; got {len(v)}: {_show(v)}")
        if key in BOUNDS:
            for x in (v if isinstance(v, list) else [v]):
                check_range(key, x, f"config key '{key}'" + (" (each value)" if isinstance(v, list) else ""))
    if cfg.stage == "mesh" and not cfg.init_from:
        raise ConfigError("the mesh stage starts from a finished NeRF run: use dream3d refine RUN_DIR")
    if cfg.stage == "mesh" and cfg.edit_source:
        raise ConfigError("dream3d edit works on NeRF runs; edit the NeRF run, then refine the edit")
    gs = cfg.gaussian
    if gs.color == "sigmoid" and gs.sh_degree != 0:
        raise ConfigError("gaussian.sh_degree 1 needs gaussian.color=sh (sigmoid colours have no view dependence)")
    g = cfg.guidance
    if not (0.0 <= g.t_min < g.t_max <= 1.0):
        raise ConfigError(f"guidance.t_min/t_max must satisfy 0 <= t_min < t_max <= 1; got {g.t_min}, {g.t_max}")
    ramp = cfg.loss.orientation_ramp
    if ramp and ramp[3] < ramp[0]:
        raise ConfigError("loss.orientation_ramp is [start_step, start_weight, end_weight, end_step] with "
                          f"end_step >= start_step; got {ramp!r}")
    if g.t_schedule == "step" and not g.t_min <= g.t_max_end <= 1.0:
        raise ConfigError(f"guidance.t_max_end must satisfy t_min <= t_max_end <= 1; got {g.t_max_end} "
                          f"(t_min {g.t_min})")
    if sum(cfg.render.shading_probs) <= 0:
        raise ConfigError("render.shading_probs must be 3 non-negative numbers (albedo, lambertian, textureless) "
                          "with a positive sum")
    for fmt in cfg.export.formats:
        if fmt not in ("glb", "obj"):
            raise ConfigError(f"export.formats: unknown format {_show(fmt)}; use glb and/or obj")
    for key in ("camera.elevation_range", "camera.azimuth_range", "camera.distance_range", "camera.fov_range"):
        v = get(cfg, key)
        if v[0] > v[1]:
            raise ConfigError(f"config key '{key}' must be [low, high] with low <= high; got {_show(v)}")


def validate_run(cfg: RunConfig) -> None:
    """`validate` plus the rules a config can only break as a run: DDS edits a source run (`dream3d edit`)."""
    validate(cfg)
    if cfg.guidance.method == "dds" and not cfg.edit_source:
        raise ConfigError("guidance.method=dds edits a finished run: use dream3d edit RUN_DIR --prompt \"...\"")


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def first_difference(a: RunConfig, b: RunConfig) -> tuple[str, typing.Any, typing.Any] | None:
    """(dotted key, a's value, b's value) of the first setting (in schema order) two configs differ in, or None."""
    for (key, va), (_, vb) in zip(_values(a), _values(b)):
        if va != vb:
            return key, va, vb
    return None


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (reloadable with `load_config`), through a temporary sibling and a rename
    (a crash or a full disk never leaves half a config)."""
    write_bytes_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True).encode("utf-8"))
