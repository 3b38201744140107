"""The guidance methods dream3d knows. Each method's own file registers its class with its typed settings.

A method is one file in dream3d/guidance/ plus its recipe configs/<name>.yaml:

    @dataclass
    class FooSettings:                      # the config section guidance.foo; fields = constructor keywords
        strength: float = 1.0

    @register("foo", FooSettings, "what it does (paper, arXiv id)")
    class FooGuidance(SDSGuidance):
        def __init__(self, prior, strength: float = FooSettings.strength, **common): ...

`methods()` imports every module of this package once, so a new file is found without being listed anywhere
else. The config schema (a `guidance.<name>` section for each method with settings, and the choices of
`guidance.method`), `dream3d generate --help`, the app's method list and `dream3d.system.build_guidance` read it;
the README's method table is `markdown_table()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from dream3d.errors import ConfigError
from dream3d.priors.protocol import DiffusionPrior

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method. cls: its `Guidance` subclass, called as `cls(prior, **common, **settings fields)`;
    settings: its settings dataclass (the config section `guidance.<name>`); description: one line for help texts
    and docs; recipe: its recipe's file name in configs/; editing: it edits a finished run (`dream3d edit`)
    rather than generating from nothing."""

    name: str
    cls: type
    settings: type
    description: str
    recipe: str
    editing: bool = False


_REGISTRY: dict[str, MethodSpec] = {}
_discovered = False


def register(name: str, settings_cls: type, description: str, *, recipe: str | None = None,
             editing: bool = False) -> Callable[[T], T]:
    """Class decorator: register the decorated `Guidance` subclass as method `name` with its settings dataclass;
    its recipe is configs/<name>.yaml unless `recipe` names another file there."""
    if not dataclasses.is_dataclass(settings_cls):
        raise TypeError(f"the settings of guidance method {name!r} must be a dataclass, got {settings_cls!r}")

    def decorate(cls: T) -> T:
        old = _REGISTRY.get(name)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"guidance method {name!r} is registered twice ({old.cls.__qualname__}, "
                             f"{cls.__qualname__})")
        _REGISTRY[name] = MethodSpec(name, cls, settings_cls, description, recipe or f"{name}.yaml", editing)
        return cls

    return decorate


def _discover() -> None:
    """Import every module of dream3d.guidance once, so every method file has registered itself."""
    global _discovered
    if _discovered:
        return
    package = importlib.import_module("dream3d.guidance")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _discovered = True


def methods() -> dict[str, MethodSpec]:
    """Every registered method by name, in alphabetical order."""
    _discover()
    return {name: _REGISTRY[name] for name in sorted(_REGISTRY)}


def markdown_table() -> str:
    """The methods as a Markdown table (method, recipe, description), as the README shows them."""
    rows = [f"| `{n}` | `configs/{s.recipe}` | {s.description} |" for n, s in methods().items()]
    return "\n".join(["| method | recipe | what it does |", "|---|---|---|", *rows])


def build(name: str, prior: DiffusionPrior, common: Mapping[str, Any], settings: Any = None) -> Any:
    """The method `name` on `prior`: `cls(prior, **common, **settings)`.

    common: the keywords every method takes (`SDSGuidance`'s: guidance_scale, weighting, t_min, t_max,
    t_schedule, t_max_end, t_anneal_step, t_knots, grad_clip, seed); settings: an instance of the method's
    settings dataclass (None: its defaults). ConfigError for an unknown name.
    """
    table = methods()
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown guidance method '{name}'{hint}; available: {', '.join(table)}")
    spec = table[name]
    settings = spec.settings() if settings is None else settings
    if not isinstance(settings, spec.settings):
        raise TypeError(f"guidance method {name!r} takes {spec.settings.__name__}, got {type(settings).__name__}")
    own = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return spec.cls(prior, **common, **own)
