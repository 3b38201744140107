"""Shipped recipes and kernel sources (dream3d.recipes) and the package list of pyproject.toml that ships them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dream3d import native, recipes
from dream3d.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_names_are_the_files_of_configs():
    names = recipes.recipe_names()
    assert names == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert {"mesh", "dds-edit", "vsd", "two-stage"} <= set(names)


def test_recipe_path_accepts_name_with_or_without_suffix():
    assert recipes.recipe_path("mesh").read_text() == (ROOT / "configs" / "mesh.yaml").read_text()
    assert recipes.recipe_path("mesh.yaml") == recipes.recipe_path("mesh")


@pytest.mark.parametrize("name", ["nope", "../pyproject", "mesh.yml"])
def test_missing_recipe_is_one_line_error_listing_the_recipes(name):
    with pytest.raises(ConfigError) as info:
        recipes.recipe_path(name)
    msg = str(info.value)
    assert "\n" not in msg and repr(name) in msg and all(f" {r}," in msg for r in ("dds-edit", "mesh", "sds"))


def test_config_file_takes_a_path_or_a_recipe_name(tmp_path, monkeypatch):
    own = tmp_path / "mine.yaml"
    own.write_text("steps: 3\n")
    assert recipes.config_file(own) == own
    assert recipes.config_file(None) is None
    assert recipes.config_file("vsd") == recipes.config_file("vsd.yaml") == recipes.recipe_path("vsd")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vsd").write_text("steps: 4\n")  # a file of that name wins over the recipe
    assert recipes.config_file("vsd") == Path("vsd")
    with pytest.raises(ConfigError, match=r"not found: other/vsd\.yaml \(nor a shipped recipe: (\w+-?\w*, )*cfd, "):
        recipes.config_file("other/vsd.yaml")


def test_recipes_missing_from_the_install_raise_instead_of_falling_back(tmp_path, monkeypatch):
    from dream3d.app import forms

    monkeypatch.setattr(recipes, "_package_dir", lambda name: tmp_path)
    assert recipes.recipe_names() == []
    with pytest.raises(ConfigError, match="no recipe named 'dds-edit'"):
        forms.edit_defaults()
    with pytest.raises(ConfigError, match="no recipe named '[a-z]+.yaml'"):
        forms.method_config("sds")


def test_uninstalled_checkout_finds_its_folders(monkeypatch):
    def not_installed(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(recipes.importlib.resources, "files", not_installed)
    assert recipes.recipes_dir() == ROOT / "configs"
    monkeypatch.setattr(recipes, "_CHECKOUT", ROOT / "tests")
    with pytest.raises(ConfigError, match="dream3d.configs is not installed"):
        recipes.recipes_dir()


def test_kernel_sources_come_from_the_package(monkeypatch):
    monkeypatch.delenv("DREAM3D_EXT_SRC", raising=False)
    assert native.source_dir("hashgrid") == recipes.kernel_source_dir("hashgrid")
    assert (native.source_dir("hashgrid") / "hashgrid_cpu.cpp").is_file()


def test_pyproject_lists_every_package_folder():
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {pkg: ROOT / folder for pkg, folder in setup["package-dir"].items()}
    on_disk = set()
    for top in ["dream3d", *mapped]:
        folder = mapped.get(top, ROOT / top)
        for d in [folder, *folder.rglob("*")]:
            if d.is_dir() and "__pycache__" not in d.parts:
                rel = d.relative_to(folder).parts
                on_disk.add(".".join([top, *rel]))
    assert set(setup["packages"]) == on_disk
