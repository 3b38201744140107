"""Config schema: files, overrides, unknown keys with suggestions, prompts as data, saved config reloads, the
guidance sections built from the method registry and the old flat guidance keys."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from dream3d.cameras import ELEVATION_RANGE
from dream3d.config import RunConfig, apply_yaml_text, load_config, save_config, to_dict, valid_keys
from dream3d.errors import ConfigError
from dream3d.guidance.registry import methods

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


# --- flat guidance keys (configs written before the method sections) ---------------------------------------------

FLAT = {"vsd_lora_rank": 8, "vsd_lora_lr": 0.002, "vsd_camera_dropout": 0.3, "vsd_lora_guidance_scale": 2.0,
        "nfsd_threshold": 0.25, "ssd_threshold": 0.7, "ssd_rescale": False, "cfd_subsamples": 4,
        "cfd_voxel_size": 0.01, "cfd_reinject": [0, 0.02, 0.001, 50], "source_prompt": "a blue cube"}
NESTED = {"vsd": {"lora_rank": 8, "lora_lr": 0.002, "camera_dropout": 0.3, "lora_guidance_scale": 2.0},
          "nfsd": {"threshold": 0.25}, "ssd": {"threshold": 0.7, "rescale": False},
          "cfd": {"subsamples": 4, "voxel_size": 0.01, "reinject": [0, 0.02, 0.001, 50]},
          "dds": {"source_prompt": "a blue cube"}}


def _notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dream3d" and r.levelname == "WARNING"]


def _write(path: Path, guidance: dict) -> Path:
    path.write_text(yaml.safe_dump({"steps": 7, "guidance": {"method": "vsd", "t_min": 0.05, **guidance}}))
    return path


def test_flat_yaml_file_loads_equal_to_nested_with_one_notice(tmp_path, caplog):
    nested = load_config(_write(tmp_path / "nested.yaml", NESTED))
    assert _notices(caplog) == []
    assert (nested.guidance.vsd.lora_rank, nested.guidance.cfd.reinject) == (8, [0.0, 0.02, 0.001, 50.0])
    assert nested.guidance.dds.source_prompt == "a blue cube" and nested.guidance.ssd.rescale is False
    flat = load_config(_write(tmp_path / "flat.yaml", FLAT))
    assert flat == nested
    (notice,) = _notices(caplog)  # one line for the whole file
    assert "\n" not in notice and "flat.yaml" in notice
    assert all(f"guidance.{k}" in notice for k in FLAT) and "guidance.vsd.lora_rank" in notice
    assert "guidance.dds.source_prompt" in notice and "guidance.cfd.reinject" in notice


def test_saved_run_config_in_the_flat_form_loads(tmp_path, caplog):
    """A config.yaml as older dream3d saved it (every key, guidance settings flat) reloads to the same config."""
    cfg = load_config(None, ["prompt=a green cone", "guidance.method=cfd", "guidance.cfd.subsamples=2"])
    data = to_dict(cfg)
    g = data["guidance"]
    for method in ("cfd", "dds", "nfsd", "ssd", "vsd"):
        for name, value in g.pop(method).items():
            g["source_prompt" if name == "source_prompt" else f"{method}_{name}"] = value
    assert set(g) >= set(FLAT)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_config(tmp_path / "config.yaml") == cfg
    assert len(_notices(caplog)) == 1
    save_config(cfg, tmp_path / "again.yaml")  # saving writes the nested form
    assert "cfd_subsamples" not in (tmp_path / "again.yaml").read_text()
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["guidance"]["cfd"]["subsamples"] == 2


def test_flat_overrides_and_one_notice_per_load(tmp_path, caplog):
    flat = [f"guidance.{k}={v}" for k, v in FLAT.items()]
    nested = [f"guidance.{m}.{k}={v}" for m, section in NESTED.items() for k, v in section.items()]
    assert load_config(None, flat) == load_config(None, nested)
    assert len(_notices(caplog)) == 1
    caplog.clear()
    cfg = load_config(_write(tmp_path / "flat.yaml", {"nfsd_threshold": 0.3}), ["guidance.ssd_rescale=false"])
    assert cfg.guidance.nfsd.threshold == 0.3 and cfg.guidance.ssd.rescale is False
    (notice,) = _notices(caplog)  # file and overrides: still one line
    assert "flat.yaml" in notice and "overrides" in notice
    caplog.clear()
    out = apply_yaml_text(RunConfig(), "guidance: {nfsd_threshold: 0.4, vsd_lora_rank: 2}", "the advanced config")
    assert (out.guidance.nfsd.threshold, out.guidance.vsd.lora_rank) == (0.4, 2)
    assert len(_notices(caplog)) == 1


def test_a_setting_given_flat_and_nested_is_an_error_naming_both(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("guidance:\n  nfsd_threshold: 0.3\n  nfsd:\n    threshold: 0.4\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "guidance.nfsd_threshold" in str(e.value) and "guidance.nfsd.threshold" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, ["guidance.dds.source_prompt=a", "guidance.source_prompt=b"])
    assert "guidance.source_prompt" in str(e.value) and "guidance.dds.source_prompt" in str(e.value)
    with pytest.raises(ConfigError, match="guidance.vsd.lora_rank"):
        apply_yaml_text(RunConfig(), "guidance: {vsd_lora_rank: 2, vsd: {lora_rank: 3}}")
    # the same key twice is an ordinary override: the last one wins
    assert load_config(None, ["guidance.vsd.lora_rank=2", "guidance.vsd.lora_rank=3"]).guidance.vsd.lora_rank == 3


def test_method_choices_come_from_the_registry():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["guidance.method=foo"])
    assert all(name in str(e.value) for name in methods())
    for name in methods():
        assert load_config(None, [f"guidance.method={name}"]).guidance.method == name
    sections = {k.split(".")[1] for k in valid_keys() if k.count(".") == 2 and k.startswith("guidance.")}
    assert sections == {n for n, spec in methods().items() if dataclasses.fields(spec.settings)}
    assert RunConfig().camera.elevation_range == list(ELEVATION_RANGE)
