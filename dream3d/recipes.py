"""The shipped recipes and kernel sources, found through `importlib.resources`.

The repository keeps the recipes (run configs in YAML) in its top-level `configs/` folder and the C++/CUDA kernel
sources in `extensions/`; pyproject.toml installs them as the packages `dream3d.configs` and `dream3d.extensions`,
so a wheel, `pip install .` and `pip install -e .` find them the same way. A source checkout that is imported
without being installed (or whose editable install predates these packages) finds them next to `dream3d/`.
A missing recipe is a ConfigError naming the recipes there are, never a silent fallback to the schema defaults.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from dream3d.errors import ConfigError

_CHECKOUT = Path(__file__).resolve().parents[1]


def _package_dir(name: str) -> Path:
    """The folder of the data package `dream3d.<name>` (`configs` or `extensions`) on the file system."""
    try:
        root = importlib.resources.files(f"dream3d.{name}")
    except ModuleNotFoundError:
        if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / name / "__init__.py").is_file():
            return _CHECKOUT / name
        raise ConfigError(f"dream3d.{name} is not installed; reinstall dream3d (pip install .)") from None
    if not isinstance(root, Path):
        raise ConfigError(f"dream3d.{name} is not on the file system ({root}); install dream3d unzipped")
    return root


def recipes_dir() -> Path:
    """The folder of the shipped recipes (`configs/` in the repository)."""
    return _package_dir("configs")


def recipe_names() -> list[str]:
    """Names of the shipped recipes, sorted: the file names in `configs/` without `.yaml` (e.g. "mesh", "vsd")."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The file of the shipped recipe `name` ("mesh" or "mesh.yaml"). Raises ConfigError listing the recipes."""
    stem = name[:-5] if name.endswith(".yaml") else name
    path = recipes_dir() / f"{stem}.yaml"
    if "/" in stem or not path.is_file():
        raise ConfigError(f"no recipe named {name!r}; the shipped recipes are: {', '.join(recipe_names())}")
    return path


def config_file(value: str | Path | None) -> Path | None:
    """A `--config` value as a file: an existing path, else the shipped recipe of that name (`--config vsd`).

    None stays None (no config file). Raises ConfigError when `value` is neither a file nor a recipe name.
    """
    if value is None or value == "":
        return None
    path = Path(value)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if str(value) in (stem, f"{stem}.yaml") and stem in recipe_names():
        return recipe_path(stem)
    raise ConfigError(f"config file not found: {value} (nor a shipped recipe: {', '.join(recipe_names())})")


def kernel_source_dir(kernel: str = "hashgrid") -> Path:
    """The folder of a kernel's C++/CUDA sources (`extensions/<kernel>` in the repository)."""
    return _package_dir("extensions") / kernel


__all__ = ["config_file", "kernel_source_dir", "recipe_names", "recipe_path", "recipes_dir"]
