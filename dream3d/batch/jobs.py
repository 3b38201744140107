"""Job lists: prompt files -> resolved, deterministically named jobs; shards for array jobs.

A prompts file is either text (one prompt per line; blank lines and lines starting with `#` are skipped) or
JSONL (`.jsonl`): one JSON object per line with a `prompt` and optional per-job settings:

    {"prompt": "a red cube", "seed": 3, "steps": 600, "method": "vsd", "config": "configs/vsd.yaml",
     "prior": "path/or/hub-id", "overrides": ["guidance.guidance_scale=7.5"]}   # or {"key": value, ...}

Settings resolve as: the job's `config` file (else the batch `--config`, else the recipe of the job's prior kind:
`dream3d.pipeline.generation_config`) <- the batch's key=value overrides <- the job's `overrides` <- its `method` /
`seed` / `steps` / `prior`. A job's name is `<prompt slug>-s<seed>-<hash>`
where the hash covers the whole resolved config, so the same prompt file and settings always give the same
names (and run folders), and changing a setting gives a new job.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from pathlib import Path
from typing import Sequence

from dream3d.config import RunConfig, load_config, to_dict
from dream3d.errors import ConfigError, Dream3DError

JSONL_KEYS = ("prompt", "seed", "steps", "method", "config", "prior", "overrides")
HASH_LEN = 8


@dataclasses.dataclass
class JobSpec:
    """One entry of a prompts file, before resolution (`where` = "file:line" for messages)."""

    prompt: str
    where: str
    seed: int | None = None
    steps: int | None = None
    method: str | None = None
    config: str | None = None
    prior: str | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Job:
    """A resolved job. `cfg` is None and `error` says why when its settings are invalid (the job then fails
    without running, and the rest of the batch goes on). `index` is its position in the whole batch."""

    name: str
    prompt: str
    seed: int
    index: int
    where: str
    cfg: RunConfig | None
    error: str = ""

    @property
    def method(self) -> str:
        return self.cfg.guidance.method if self.cfg else ""

    @property
    def steps(self) -> int:
        return self.cfg.steps if self.cfg else 0


# --- parsing ---------------------------------------------------------------------------------------------------
def _overrides_list(value, where: str) -> list[str]:
    if isinstance(value, dict):  # {"key": value}: strings stay text, the rest as JSON (which is YAML)
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where}: 'overrides' must be a list of \"key=value\" strings or an object, got {value!r}")


def _spec_from_json(obj, where: str) -> JobSpec:
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object with a \"prompt\", got {obj!r}")
    for key in obj:
        if key not in JSONL_KEYS:
            close = difflib.get_close_matches(key, JSONL_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (keys: {', '.join(JSONL_KEYS)})"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{where}: every line needs a non-empty \"prompt\"")
    for key, typ in (("seed", int), ("steps", int), ("method", str), ("config", str), ("prior", str)):
        v = obj.get(key)
        if v is not None and (not isinstance(v, typ) or isinstance(v, bool)):
            raise ConfigError(f"{where}: '{key}' must be {'an integer' if typ is int else 'text'}, got {v!r}")
    return JobSpec(prompt=prompt.strip(), where=where, seed=obj.get("seed"), steps=obj.get("steps"),
                   method=obj.get("method"), config=obj.get("config"), prior=obj.get("prior"),
                   overrides=_overrides_list(obj.get("overrides", []), where))


def parse_prompts(path: str | Path) -> list[JobSpec]:
    """Read a .txt or .jsonl prompts file. Raises Dream3DError (naming the file and line) on bad input."""
    path = Path(path)
    if not path.is_file():
        raise Dream3DError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise Dream3DError(f"{path} is not UTF-8 text") from None
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    specs = []
    for i, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path.name}:{i}"
        if jsonl:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: invalid JSON ({e.msg})") from None
            specs.append(_spec_from_json(obj, where))
        else:
            specs.append(JobSpec(prompt=text, where=where))
    if not specs:
        raise Dream3DError(f"{path} holds no prompts")
    return specs


def parse_seeds(text: str | None) -> list[int] | None:
    """'0,1,2' -> [0, 1, 2]; None/'' -> None (use the config's seed)."""
    if not text:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise Dream3DError(f"--seeds takes comma-separated integers, e.g. 0,1; got {text!r}") from None
    return list(dict.fromkeys(seeds)) or None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 0 <= I < N."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise Dream3DError(f"--shard takes I/N with 0 <= I < N, e.g. 0/4; got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise Dream3DError(f"--shard {text}: need 0 <= I < N (Slurm: --array=0-{max(n - 1, 0)})")
    return i, n


# --- resolution ------------------------------------------------------------------------------------------------
def settings_hash(cfg: RunConfig) -> str:
    """Short hash of everything that defines a run (the resolved config; the folder name excluded)."""
    d = to_dict(cfg)
    d.pop("name", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:HASH_LEN]


def job_name(prompt: str, seed: int, digest: str) -> str:
    from dream3d.fileio import slugify
    return f"{slugify(prompt)}-s{seed}-{digest}"


def _config_path(name: str, prompts_dir: Path) -> str:
    """A job's config file: as given (relative to the working folder), else relative to the prompts file."""
    p = Path(name)
    if not p.is_absolute() and not p.is_file() and (prompts_dir / p).is_file():
        return str(prompts_dir / p)
    return name


def _absolute_prior(cfg: RunConfig) -> None:
    """Local prior folders become absolute, so workers (and Ray nodes) started elsewhere find them."""
    if cfg.prior and Path(cfg.prior).exists():
        cfg.prior = str(Path(cfg.prior).resolve())


def build_jobs(specs: Sequence[JobSpec], config: str | None = None, overrides: Sequence[str] = (),
               seeds: list[int] | None = None, prompts_dir: str | Path = ".") -> list[Job]:
    """Expand specs x seeds (a spec's own seed wins) into resolved jobs, in file order, duplicates dropped.

    The batch-wide config and overrides are validated first (a mistake there raises ConfigError); a job whose
    own settings are invalid becomes a Job with `error` set.
    """
    from dream3d.pipeline import generation_config

    load_config(config, overrides)  # batch-wide mistakes stop the batch before anything runs
    jobs: list[Job] = []
    seen: set[str] = set()
    for spec in specs:
        for seed in ([spec.seed] if spec.seed is not None else (seeds or [None])):
            extra = list(spec.overrides)
            for key, value in (("guidance.method", spec.method), ("steps", spec.steps), ("prior", spec.prior),
                               ("seed", seed)):
                if value is not None:
                    extra.append(f"{key}={value}")
            cfg_file = _config_path(spec.config, Path(prompts_dir)) if spec.config else config
            try:
                cfg, _ = generation_config(cfg_file, [*overrides, *extra])
                cfg.prompt, cfg.name = spec.prompt, ""  # data, never parsed
                _absolute_prior(cfg)
                name, error = job_name(spec.prompt, cfg.seed, settings_hash(cfg)), ""
            except Dream3DError as e:
                raw = json.dumps([spec.prompt, cfg_file, list(overrides), extra], sort_keys=True)
                cfg, error = None, f"{spec.where}: {e}"
                seed = seed if seed is not None else 0
                name = job_name(spec.prompt, seed, hashlib.sha1(raw.encode()).hexdigest()[:HASH_LEN])
            if name in seen:
                continue
            seen.add(name)
            jobs.append(Job(name=name, prompt=spec.prompt, seed=cfg.seed if cfg else seed, index=len(jobs),
                            where=spec.where, cfg=cfg, error=error))
    return jobs


def shard_jobs(jobs: Sequence[Job], shard: tuple[int, int] | None) -> list[Job]:
    """Jobs of shard (I, N): those whose batch index is I mod N (round robin, so shards differ by at most one
    job and appending prompts to the file never moves existing jobs to another shard)."""
    if shard is None:
        return list(jobs)
    i, n = shard
    return [j for j in jobs if j.index % n == i]
