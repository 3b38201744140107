"""Hostile and careless config input: every number at and beyond its bounds, YAML spellings, YAML bombs, damaged
files, safe messages, verified checkpoints (in process; the command-line cases are in test_hostile_cli.py)."""

import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import typing

import pytest
import torch

from dream3d import checkpoint as ckpt
from dream3d.config import (BOUNDS, LIST_LENGTHS, MAX_YAML_DEPTH, MAX_YAML_NODES, RunConfig, apply_yaml_text, get,
                            load_config, valid_keys, validate_run)
from dream3d.errors import ConfigError, Dream3DError, safe_text
from hostile_support import DAMAGES, damage_checkpoint


def _key_type(key: str):
    cls = RunConfig
    *sections, name = key.split(".")
    for part in sections:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[name]


def _numeric(typ) -> bool:
    return typ in (int, float) or typing.get_args(typ) in ((int,), (float,))


NUMERIC_KEYS = [k for k in valid_keys() if _numeric(_key_type(k))]


def _override(key: str, value) -> str:
    """key=value, a list setting given as a list of `value` as long as its default (an empty default: the shortest
    length it may have)."""
    current = get(RunConfig(), key)
    if isinstance(current, list):
        n = len(current) if current else min(n for n in LIST_LENGTHS.get(key, (1,)) if n)
        return f"{key}=[{', '.join([repr(value)] * n)}]"
    return f"{key}={value!r}"


def test_every_number_of_the_schema_has_bounds():
    assert sorted(NUMERIC_KEYS) == sorted(BOUNDS)


def _beyond(key: str) -> list:
    """Values just outside the range of `key` (int settings: the next integers)."""
    r, integral = BOUNDS[key], int in (_key_type(key), *typing.get_args(_key_type(key)))
    step = 1 if integral else max(abs(r.hi - r.lo) * 1e-3, 1e-9)
    return [r.lo if r.open_lo else r.lo - step, r.hi if r.open_hi else r.hi + step]


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_each_number_beyond_its_bounds_is_one_line_naming_the_bound(key):
    for value in _beyond(key):
        with pytest.raises(ConfigError) as err:
            load_config(None, [_override(key, value)])
        msg = str(err.value)
        assert key in msg and str(BOUNDS[key]) in msg and len(msg) < 300 and "\n" not in msg, msg


@pytest.mark.parametrize("key", sorted(k for k in BOUNDS if float in (_key_type(k), *typing.get_args(_key_type(k)))))
def test_nan_and_inf_are_refused_in_their_yaml_spellings(key):
    for spelling in (".nan", ".inf", "-.inf", ".NaN"):
        with pytest.raises(ConfigError, match="finite"):
            load_config(None, [_override(key, "X").replace("'X'", spelling)])


@pytest.mark.parametrize("key", ["render.height", "geometry.log2_hashmap_size", "steps", "optim.lr",
                                 "camera.fov_range", "export.texture_size"])
def test_values_at_the_bounds_load(key):
    r = BOUNDS[key]
    inside = [v for v in (r.lo, r.hi) if v in r] or [(r.lo + r.hi) / 2]
    integral = _key_type(key) is int
    for v in inside:
        cfg = load_config(None, [_override(key, int(v) if integral else float(v))])
        got = get(cfg, key)
        assert (got[0] if isinstance(got, list) else got) == v


def test_yaml_numbers_in_every_usual_spelling(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-3\n  eps: 1E-15\nsteps: 1_000\nrender: {height: .5e2, width: 3.2e+1}\n"
                 "guidance: {guidance_scale: .5, t_min: 2e-2}\n")
    cfg = load_config(f)
    assert (cfg.optim.lr, cfg.optim.eps, cfg.steps) == (1e-3, 1e-15, 1000)
    assert (cfg.render.height, cfg.render.width, cfg.guidance.guidance_scale, cfg.guidance.t_min) == (50, 32, .5, .02)
    cfg = load_config(None, ["optim.lr=1e-3", "steps=2e3", "optim.betas=[9e-1, .99]", "checkpoint_every=1_0"])
    assert (cfg.optim.lr, cfg.steps, cfg.optim.betas, cfg.checkpoint_every) == (1e-3, 2000, [0.9, 0.99], 10)
    assert isinstance(cfg.steps, int)
    with pytest.raises(ConfigError, match="expects an integer"):
        load_config(None, ["steps=1.5"])


@pytest.mark.parametrize("override, expected", [
    ("optim.betas=[0.9]", "list of 2 values"), ("render.shading_probs=[1, 1]", "list of 3 values"),
    ("camera.fov_range=[0, 0]", "(0, 180)"), ("camera.elevation_range=[30, 10]", "low <= high"),
    ("guidance.t_min=0.99", "t_min < t_max"), ("guidance.t_max_end=0.01", "t_max_end"),
    ("render.shading_probs=[0, 0, 0]", "positive sum"), ("guidance.cfd.reinject=[1, 2]", "list of 0 or 1 or 4"),
    ("seed=18446744073709551616", "[0, 9223372036854775806]"), ("export.formats=[]", "list of 1 or 2"),
    ("guidance.method=nope", "must be one of"), ("prompt=" + "x" * 5000, "at most 1000"),
    ("optim.lr=1e400", "finite"),
])
def test_impossible_values_are_one_line(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value) and len(str(err.value)) < 300, str(err.value)


def test_dds_needs_an_edit_source():
    cfg = load_config(None, ["guidance.method=dds"])  # a config may name dds (the edit recipe does) ...
    with pytest.raises(ConfigError, match="dream3d edit"):  # ... but it cannot run without a source
        validate_run(cfg)


def _bomb(levels: int = 9, width: int = 9) -> str:
    text, prev = "a: &a [" + ", ".join(['"lol"'] * width) + "]\n", "a"
    for i in range(levels):
        name = f"l{i}"
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * width) + "]\n"
        prev = name
    return text + f"prompt: *{prev}\n"


@pytest.mark.parametrize("text, expected", [
    (_bomb(), f"more than {MAX_YAML_NODES} values"),
    ("prompt: " + "[" * 50_000 + "]" * 50_000, f"deeper than {MAX_YAML_DEPTH}"),
    ("".join("  " * i + f"k{i}:\n" for i in range(200)), f"deeper than {MAX_YAML_DEPTH}"),
    ("geometry: &a {bound: *a}\n", "contains itself"),
    ("a: " + "x" * 1_000_001, "too large"),
    ("steps: [1\n", "cannot parse"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_yaml_bombs_and_garbage_are_one_line_in_files_and_the_app_editor(tmp_path, text, expected):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    for load in (lambda: load_config(f), lambda: apply_yaml_text(RunConfig(), text)):
        with pytest.raises(ConfigError) as err:
            load()
        assert expected in str(err.value) and len(str(err.value)) < 300, str(err.value)[:400]


def test_the_app_editor_validates_like_the_command_line():
    with pytest.raises(ConfigError, match=r"\[1, 2048\]"):
        apply_yaml_text(RunConfig(), "render: {height: 100000}")
    assert apply_yaml_text(RunConfig(), "optim: {lr: 1e-3}").optim.lr == 1e-3


@pytest.mark.parametrize("content", [b"prompt: caf\xe9\n", b"\xff\xfe\x00p\x00", b"steps: 5\n\x80\x81"])
def test_a_config_file_that_is_not_utf8_is_one_line_naming_it(tmp_path, content):
    f = tmp_path / "latin1.yaml"
    f.write_bytes(content)
    with pytest.raises(Dream3DError) as err:
        load_config(f)
    assert "latin1.yaml" in str(err.value) and "UTF-8" in str(err.value)


def test_bytes_that_were_not_utf8_in_a_prompt_are_refused():
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(None, ["prompt=a red \udcff cube"])  # how Python hands over an argv byte that is not UTF-8


def test_safe_text_escapes_control_characters_and_cuts_long_text():
    hostile = "a red cube\x1b[2J\rFAKE\u202e" + "x" * 10_000
    shown = safe_text(hostile)
    assert not any(ord(c) < 32 or c == "\u202e" for c in shown)
    assert shown.startswith("a red cube\\x1b[2J\\rFAKE\\u202e") and shown.endswith("(9829 more characters)")
    assert len(shown) < 240


# --- checkpoints -------------------------------------------------------------------------------------------------
def _tensors(v: float) -> dict:
    return {"w": torch.full((64,), v), "step": torch.tensor([int(v)])}


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, how, caplog):
    path = tmp_path / "checkpoint"
    ckpt.save_checkpoint(path, _tensors(1), {"step": 1})
    ckpt.save_checkpoint(path, _tensors(2), {"step": 2})
    damage_checkpoint(path, how)
    with caplog.at_level("WARNING", logger="dream3d"):
        tensors, meta = ckpt.load_checkpoint(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.full((64,), 1.0))
    assert "skipped a damaged checkpoint" in caplog.text and "step 1" in caplog.text
    damage_checkpoint(path.with_name("checkpoint.prev"), how)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    assert "checkpoint" in str(err.value) and len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_a_checkpoint_from_before_the_checksums_still_loads(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "checkpoint"
    path.mkdir()
    save_file(_tensors(3), str(path / ckpt.TENSORS_FILE))
    (path / ckpt.META_FILE).write_text('{"step": 3}')
    assert ckpt.load_checkpoint(path)[1]["step"] == 3


def test_a_full_disk_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint"
    ckpt.save_checkpoint(path, _tensors(1), {"step": 1})
    real = type(path).write_bytes

    def full(self, data):
        real(self, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(path), "write_bytes", full)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.save_checkpoint(path, _tensors(2), {"step": 2})
    monkeypatch.undo()
    assert "no space left on device" in str(err.value) and "previous checkpoint is kept" in str(err.value)
    assert not path.with_name("checkpoint.tmp").exists()
    tensors, meta = ckpt.load_checkpoint(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.full((64,), 1.0))
    ckpt.save_checkpoint(path, _tensors(2), {"step": 2})  # space freed: the next save goes through
    assert ckpt.load_checkpoint(path)[1]["step"] == 2


def test_tensors_of_another_architecture_are_one_line_naming_the_checkpoint():
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_module_tensors("m", torch.nn.Linear(3, 4), {"m.weight": torch.zeros(5, 3), "m.bias": torch.zeros(5)},
                                 source="run/checkpoint")
    assert "run/checkpoint does not fit" in str(err.value) and "size mismatch" in str(err.value)
    assert len(str(err.value)) < 300


def test_schema_types_have_no_unbounded_numbers_hidden_in_sections():
    # the bounds table follows the schema: a new numeric setting must come with its range
    for f in dataclasses.fields(RunConfig):
        assert f.name in {k.split(".")[0] for k in valid_keys()}
    assert all(math.isfinite(r.lo) and math.isfinite(r.hi) for r in BOUNDS.values())


# ---------- kernel builds that cannot hang ----------

def _copied_kernel_sources(tmp_path):
    from dream3d import native

    src = tmp_path / "src" / "hashgrid"
    shutil.copytree(native.source_dir("hashgrid"), src)
    return src


def test_the_kernel_cache_key_covers_source_bytes_headers_flags_and_toolchain(tmp_path):
    from dream3d import native

    src = _copied_kernel_sources(tmp_path)
    build = native.spec("hashgrid", "cpu")
    key = native.cache_key(build, src)
    assert len(key) == 12 and native.cache_key(build, src) == key
    cpp = src / build.sources[0]
    data = cpp.read_bytes()
    cpp.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert native.cache_key(build, src) != key
    cpp.write_bytes(data)
    assert native.cache_key(build, src) == key
    (src / "hashgrid_common.h").write_bytes((src / "hashgrid_common.h").read_bytes() + b"\n")
    changed_header = native.cache_key(build, src)
    assert changed_header != key
    assert native.cache_key(dataclasses.replace(build, cflags=("-O2", "-fopenmp")), src) != changed_header
    assert native.cache_key(dataclasses.replace(build, ldflags=()), src) != changed_header
    tools = native.toolchain()
    assert native.cache_key(build, src, tools) == changed_header
    for field, other in (("python", "cpython-399"), ("torch", "0.0.1"), ("cxx11_abi", str(tools["cxx11_abi"] == "False")),
                         ("cuda", "99.9")):
        assert native.cache_key(build, src, {**tools, field: other}) != changed_header, field


def test_a_build_lock_left_by_a_killed_build_is_taken_over_with_torchs_baton(tmp_path, caplog):
    from dream3d import native

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "build"
    folder.mkdir()
    (folder / native.BUILD_LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                        "since": "2026-01-01T00:00:00+00:00"}))
    (folder / native.TORCH_BATON).write_bytes(b"")  # torch would wait on this for ever
    with caplog.at_level(logging.WARNING, logger="dream3d"), native.build_lock(folder, "the test kernel", wait_s=0):
        assert not (folder / native.TORCH_BATON).exists()
        assert json.loads((folder / native.BUILD_LOCK).read_text())["pid"] == os.getpid()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"took over the build lock {folder / native.BUILD_LOCK} left by pid {dead.stdout.strip()}")
    assert line.endswith("(no longer running)")
    assert (folder / native.BUILD_LOCK).read_text() == ""  # released


def test_a_build_held_by_a_live_process_is_waited_for_then_the_torch_path(tmp_path, monkeypatch, caplog):
    from dream3d import native
    from dream3d.encoding import HashGridEncoding

    monkeypatch.setenv("DREAM3D_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DREAM3D_BUILD_WAIT", "0.5")
    folder = native.build_dir(native.spec("hashgrid", "cpu"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from dream3d import native\n"
                               "with native.build_lock(Path(sys.argv[1]), 'the cpu hash-grid kernel'):\n"
                               " print('held', flush=True)\n time.sleep(60)", str(folder)], stdout=subprocess.PIPE)
    native.reset()
    try:
        assert holder.stdout.readline().strip() == b"held"
        with caplog.at_level(logging.WARNING, logger="dream3d"):
            assert native.load("hashgrid", "cpu") is None
            enc = HashGridEncoding(n_levels=2, log2_hashmap_size=10)
            assert enc.backend_for(torch.device("cpu")) == "torch"
        waiting, fallback = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        lock = folder / native.BUILD_LOCK
        assert waiting.startswith(f"waiting for the build of the cpu hash-grid kernel by pid {holder.pid} on ")
        assert fallback.startswith("building the cpu hash-grid kernel failed (BuildLockTimeout: waited 0.5 s for "
                                   f"the build lock {lock} held by pid {holder.pid} on {socket.gethostname()}")
        assert fallback.endswith("using a fallback") and len(fallback) < 400
        assert "BuildLockTimeout" in native.load_error("hashgrid", "cpu")
    finally:
        holder.kill()
        holder.wait()
        monkeypatch.undo()
        native.reset()
