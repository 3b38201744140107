"""The guidance-method registry: what each method registers, and that everything listing methods reads it (the
config schema, `build_guidance`, the app, `--help`, the README table). A method added as one new file in the
package shows up in all of them."""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dream3d.app import forms
from dream3d.cli import build_parser
from dream3d.config import RunConfig, load_config
from dream3d.errors import ConfigError
from dream3d.guidance import registry
from dream3d.guidance.base import Guidance
from dream3d.system import build_guidance
from tiny_models import PointMassPrior

ROOT = Path(__file__).resolve().parents[1]


def test_every_method_registers_a_guidance_class_and_its_settings():
    table = registry.methods()
    assert list(table) == ["asd", "cfd", "csd", "dds", "esd", "ism", "nfsd", "perpneg", "sdi", "sds", "ssd", "vsd"]
    for name, spec in table.items():
        assert issubclass(spec.cls, Guidance) and dataclasses.is_dataclass(spec.settings)
        params = inspect.signature(spec.cls).parameters
        for f in dataclasses.fields(spec.settings):  # settings fields are constructor keywords
            assert f.name in params, (name, f.name)
        assert (ROOT / "configs" / spec.recipe).is_file(), spec.recipe
        assert load_config(ROOT / "configs" / spec.recipe).guidance.method == name
    assert [n for n, s in table.items() if s.editing] == ["dds"]


def test_config_sections_are_the_settings_with_their_defaults():
    g = RunConfig().guidance
    for name, spec in registry.methods().items():
        if dataclasses.fields(spec.settings):
            assert getattr(g, name) == spec.settings()
        else:
            assert not hasattr(g, name)


def test_build_guidance_and_build_pass_the_settings():
    prior = PointMassPrior({"": torch.zeros(3, 4, 4).double()})
    cfg = load_config(None, ["guidance.method=ssd", "guidance.ssd.threshold=0.5", "guidance.ssd.rescale=false",
                             "guidance.t_schedule=step", "guidance.t_max_end=0.4", "steps=100"])
    ssd = build_guidance(cfg, prior)
    assert type(ssd).__name__ == "SSDGuidance" and ssd.threshold_t == 500 and ssd.rescale is False
    assert ssd.schedule.t_max_end == 0.4 and ssd.schedule.anneal_step == 50
    sds = registry.build("sds", prior, {"guidance_scale": 2.0})
    assert type(sds).__name__ == "SDSGuidance" and sds.guidance_scale == 2.0
    with pytest.raises(ConfigError, match="did you mean 'sds'"):
        registry.build("sdss", prior, {})
    with pytest.raises(TypeError, match="NFSDSettings"):
        registry.build("nfsd", prior, {}, registry.methods()["ssd"].settings())


def test_app_and_help_list_the_registered_methods():
    generation = [n for n, s in registry.methods().items() if not s.editing]
    assert list(forms.methods()) == generation
    assert forms.methods()["vsd"] == ROOT / "configs" / "vsd.yaml"
    with pytest.raises(ConfigError, match="dds edits a finished run; use the Edit tab"):
        forms.generate_config("a red cube", "dds")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["generate"].format_help().split())
    for name, spec in registry.methods().items():
        assert f"{name}: {' '.join(spec.description.split())}" in text


def test_readme_table_is_the_registry_table():
    """The README's method table is `registry.markdown_table()`; after adding a method, paste its output (python -c
    'from dream3d.guidance.registry import markdown_table; print(markdown_table())') into README.md."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Guidance methods"):]
    section = section[:section.index("\n## ")]
    assert registry.markdown_table() in section
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == len(registry.methods())  # no row of a method that is gone


NEW_METHOD = '''
from dataclasses import dataclass

from dream3d.guidance.registry import register
from dream3d.guidance.sds import SDSGuidance


@dataclass
class HalfSettings:
    """guidance.half: scale of the SDS gradient."""

    factor: float = 0.5


@register("half", HalfSettings, "SDS at a fraction of its strength (a test method)")
class HalfGuidance(SDSGuidance):
    def __init__(self, prior, factor: float = HalfSettings.factor, **common):
        super().__init__(prior, **common)
        self.factor = factor

    def grad(self, x, t, noise, batch):
        return self.factor * super().grad(x, t, noise, batch)
'''

CHECK = '''
import sys
from pathlib import Path
import dream3d.guidance
from dream3d import recipes
dream3d.guidance.__path__.append(sys.argv[1])  # the new file sits in a folder of the package
recipes._package_dir = lambda name: Path(sys.argv[2])  # the shipped recipes plus the new one
from dream3d.app import forms
from dream3d.cli import build_parser
from dream3d.config import load_config
from dream3d.system import build_guidance
from tiny_models import PointMassPrior
import torch

cfg = load_config(None, ["guidance.method=half", "guidance.half.factor=0.25"])
g = build_guidance(cfg, PointMassPrior({"": torch.zeros(3, 4, 4).double()}))
assert type(g).__name__ == "HalfGuidance" and g.factor == 0.25
assert "half" in forms.methods()
sub = next(a for a in build_parser()._actions if a.dest == "command")
assert "half: SDS at a fraction" in " ".join(sub.choices["generate"].format_help().split())
print("ok")
'''


def test_a_new_method_is_one_file(tmp_path):
    """A method file in the package (here: a folder appended to its path) plus its recipe is a config section, a
    valid `guidance.method`, built by `build_guidance`, listed by the app and by `--help`, without any other edit."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "half.py").write_text(textwrap.dedent(NEW_METHOD))
    (tmp_path / "check.py").write_text(CHECK)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "configs" / "half.yaml").write_text("guidance:\n  method: half\n  half: {factor: 0.5}\n")
    r = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path / "methods"), str(tmp_path / "configs")],
                       capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
                                      "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
