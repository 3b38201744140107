"""Config schema: files, overrides, unknown keys with suggestions, prompts as data, saved config reloads."""

from pathlib import Path

import pytest
import yaml

from dream3d.config import RunConfig, load_config, save_config, to_dict
from dream3d.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_overrides_and_types():
    cfg = load_config(None, ["guidance.guidance_scale=7", "steps=12", "render.shading_probs=[1,0,0]"])
    assert cfg.guidance.guidance_scale == 7.0 and isinstance(cfg.guidance.guidance_scale, float)
    assert cfg.steps == 12 and cfg.render.shading_probs == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("override,hint", [("guidance.guidence_scale=3", "guidance.guidance_scale"),
                                           ("guidance_scale=3", "guidance.guidance_scale"),
                                           ("stpes=3", "steps")])
def test_unknown_key_names_key_and_suggestion(override, hint):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert override.split("=")[0] in msg and hint in msg and "\n" not in msg


@pytest.mark.parametrize("override", ["steps=abc", "guidance.method=foo", "steps=-1", "guidance.t_min=0.99",
                                      "export.formats=[fbx]", "noequals"])
def test_bad_values_are_config_errors(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_unknown_key_in_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("guidance:\n  scale: 3\n")
    with pytest.raises(ConfigError, match="guidance.scale"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_prompt_is_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "leaked")
    text = 'a ${oc.env:SECRET_TOKEN} "cube" {x}: y'
    cfg = load_config(None, [f"prompt={text}", "guidance.negative_prompt=${oc.env:SECRET_TOKEN}"])
    assert cfg.prompt == text and cfg.guidance.negative_prompt == "${oc.env:SECRET_TOKEN}"
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and "leaked" not in (tmp_path / "config.yaml").read_text()


def test_cpu_default_yaml_equals_schema_defaults():
    data = yaml.safe_load((CONFIGS / "cpu-default.yaml").read_text())
    expected = to_dict(RunConfig())
    expected.pop("prompt"), expected.pop("name"), expected.pop("edit_source")
    assert data == expected


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(path)
