"""Hash-grid encoding: tcnn's definition (reference test vectors), the torch reference against an independent
per-point float64 implementation, and our C++ kernel against the torch reference and finite differences."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from kernel_support import built_cpu_kernel
import torch

from dream3d import native
from dream3d.encoding import HashGridEncoding, LevelInfo, hash_coords, hashgrid_torch, level_table, n_params
from dream3d.encoding.backends import resolve_backend
from dream3d.errors import Dream3DError

# Small config with dense levels (one exactly at res^3 == 2^T, one rounded up to 8) and hashed levels:
# scales 3, 5, 8, 12.5, 19.25, 29.375 -> res 4, 6, 9, 14, 21, 31.
SMALL = dict(n_levels=6, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)


@pytest.fixture(scope="module")
def cpp_ext():
    """The built C++ kernel (built once per machine and cached); a failed build is a test failure."""
    return built_cpu_kernel("hashgrid")


def make_pair(backend: str = "cpp", seed: int = 0, value_range: float = 1.0, **kw) -> tuple:
    """(torch-backend module, `backend` module) sharing one random table."""
    torch.manual_seed(seed)
    ref = HashGridEncoding(backend="torch", **kw)
    with torch.no_grad():
        ref.params.uniform_(-value_range, value_range)
    other = HashGridEncoding(backend=backend, **kw)
    other.load_state_dict(ref.state_dict())
    return ref, other


def test_level_table_matches_reference_vectors():
    table = level_table()
    expected = {  # level: (scale to 4 decimals, res, entries, dense)
        0: (15.0000, 16, 4096, True), 1: (22.1563, 24, 13824, True), 2: (32.5134, 34, 39304, True),
        3: (47.5029, 49, 117656, True), 4: (69.1968, 71, 357912, True), 5: (100.5937, 102, 524288, False),
        14: (2829.1567, 2831, 524288, False), 15: (4094.9985, 4096, 524288, False),
    }
    for level, (scale, res, entries, dense) in expected.items():
        lv = table[level]
        assert round(lv.scale, 4) == pytest.approx(scale, abs=1e-9)
        assert (lv.resolution, lv.entries, lv.dense) == (res, entries, dense)
    assert [lv.offset for lv in table] == list(np.cumsum([0] + [lv.entries for lv in table[:-1]]))
    assert n_params(table, 2) == 12_599_920
    assert HashGridEncoding().params.numel() == 12_599_920


def test_small_table_dense_boundaries():
    table = level_table(3, **SMALL)
    assert [lv.resolution for lv in table] == [4, 6, 9, 14, 21, 31]
    assert [lv.entries for lv in table] == [64, 216, 736, 2744, 4096, 4096]  # 729 rounded up to 8
    assert [lv.dense for lv in table] == [True, True, True, True, False, False]
    # res^3 == 2^T exactly is still dense (tcnn's `stride <= hashmap_size`)
    assert level_table(3, n_levels=1, log2_hashmap_size=12, base_resolution=16)[0].dense


def test_hash_values():
    assert hash_coords((0, 0, 0)) == 0
    assert hash_coords((1, 2, 3)) == 2892625372 and 2892625372 % 2**19 == 128476
    assert hash_coords((123, 456, 789)) == 635907338 and 635907338 % 2**19 == 470282
    assert hash_coords((1000, 2000, 3000)) == 2316627744 and 2316627744 % 2**19 == 323360


def test_module_interface():
    enc = HashGridEncoding(backend="torch", **SMALL)
    assert enc.n_output_dims == 12
    assert list(enc.state_dict()) == ["params"]
    assert enc.params.abs().max() <= 1e-4 and enc.params.std() > 1e-5  # uniform(-1e-4, 1e-4)
    y = enc(torch.rand(2, 5, 3))
    assert y.shape == (2, 5, 12) and y.dtype == torch.float32
    with pytest.raises(Dream3DError):
        HashGridEncoding(backend="nope")
    with pytest.raises(Dream3DError):
        HashGridEncoding(interpolation="cubic")


# ---------- an independent per-point float64 implementation of the definition ----------

def naive_encode(x: np.ndarray, table: np.ndarray, levels: list[LevelInfo], n_features: int,
                 smooth: bool) -> np.ndarray:
    """Straight from the written definition, one point, level and corner at a time, in Python ints/float64."""
    primes = (1, 2654435761, 805459861, 3674653429)
    rows = table.reshape(-1, n_features).astype(np.float64)
    out = np.zeros((len(x), len(levels) * n_features))
    for i, point in enumerate(x):
        for lv in levels:
            cells, fracs = [], []
            for xd in point:
                pos = float(np.float32(np.float64(lv.scale) * np.float64(xd) + 0.5))  # == fmaf in float32
                cells.append(int(np.floor(pos)))
                f = pos - np.floor(pos)
                fracs.append(f * f * (3 - 2 * f) if smooth else f)
            for corner in range(2 ** len(point)):
                c = [cells[d] + ((corner >> d) & 1) for d in range(len(point))]
                weight = np.prod([fracs[d] if (corner >> d) & 1 else 1 - fracs[d] for d in range(len(point))])
                if lv.dense:
                    index = sum((cd & 0xFFFFFFFF) * lv.resolution**d for d, cd in enumerate(c)) & 0xFFFFFFFF
                else:
                    index = 0
                    for d, cd in enumerate(c):
                        index ^= ((cd & 0xFFFFFFFF) * primes[d]) & 0xFFFFFFFF
                row = lv.offset + index % lv.entries
                out[i, lv.level * n_features:(lv.level + 1) * n_features] += weight * rows[row]
    return out


def sample_points() -> torch.Tensor:
    """Random points plus points on cell boundaries (frac = 0 exactly), on the cube's faces and slightly outside."""
    torch.manual_seed(1)
    special = torch.tensor([
        [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.0625, 0.1875, 0.3125], [1.0, 0.0, 0.5],
        [-0.01, 0.5, 1.01], [-0.3, -0.2, 1.2], [0.25, 0.75, 0.999999],
    ])
    return torch.cat([special, torch.rand(40, 3)])


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_torch_reference_matches_naive_float64(interpolation):
    ref, _ = make_pair("torch", n_features_per_level=2, interpolation=interpolation, **SMALL)
    x = sample_points()
    got = ref(x).detach().numpy()
    want = naive_encode(x.numpy(), ref.params.detach().numpy(), ref.levels, 2, interpolation == "smoothstep")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_torch_reference_matches_naive_full_config_hashed_levels():
    ref, _ = make_pair("torch", n_features_per_level=2)
    x = sample_points()[:12]
    want = naive_encode(x.numpy(), ref.params.detach().numpy(), ref.levels, 2, False)
    np.testing.assert_allclose(ref(x).detach().numpy(), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_partition_of_unity(backend, interpolation, request):
    if backend == "cpp":
        request.getfixturevalue("cpp_ext")
    enc = HashGridEncoding(backend=backend, interpolation=interpolation, **SMALL)
    with torch.no_grad():
        enc.params.fill_(0.37)
    y = enc(sample_points())
    torch.testing.assert_close(y, torch.full_like(y, 0.37), rtol=0, atol=1e-6)


# ---------- C++ kernel against the torch reference ----------

def assert_same_outputs_and_grads(ref, other, x):
    """Forward within 1e-6 and grid/input gradients of `other` equal to the reference encoding's."""
    x_ref, x_oth = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_oth = ref(x_ref), other(x_oth)
    torch.testing.assert_close(y_oth, y_ref, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()
    (y_oth * g).sum().backward()
    torch.testing.assert_close(other.params.grad, ref.params.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_oth.grad, x_ref.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_features", [1, 2, 4, 8])
@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_cpp_matches_torch(cpp_ext, n_features, interpolation):
    ref, cpp = make_pair("cpp", n_features_per_level=n_features, interpolation=interpolation, **SMALL)
    x = sample_points()
    assert_same_outputs_and_grads(ref, cpp, x)


@pytest.mark.parametrize("n_dims", [2, 4])
def test_cpp_matches_torch_other_dims(cpp_ext, n_dims):
    config = dict(SMALL, log2_hashmap_size=8 if n_dims == 2 else 12)
    ref, cpp = make_pair("cpp", n_input_dims=n_dims, **config)
    assert any(lv.dense for lv in ref.levels) and not all(lv.dense for lv in ref.levels)
    torch.manual_seed(2)
    x = torch.rand(300, n_dims) * 1.1 - 0.05
    assert_same_outputs_and_grads(ref, cpp, x)


def test_cpp_full_config_matches_torch(cpp_ext):
    ref, cpp = make_pair("cpp")
    x = torch.rand(2000, 3)
    y_ref, y_cpp = ref(x), cpp(x)
    # relative to the output scale (table values in [-1, 1])
    torch.testing.assert_close(y_cpp, y_ref, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y_ref)
    gp_ref = torch.autograd.grad(y_ref, ref.params, g)[0]
    gp_cpp = torch.autograd.grad(y_cpp, cpp.params, g)[0]
    torch.testing.assert_close(gp_cpp, gp_ref, rtol=1e-5, atol=1e-6)


def test_cpp_backward_is_bitwise_reproducible_for_any_thread_count(cpp_ext):
    """Gradients are summed in a fixed order: where thousands of points share every table entry, repeated calls
    with 2 threads, other thread counts and input-gradient segment sizes give bitwise the same gradients, and
    they equal the torch reference's within float32 rounding."""
    config = dict(n_levels=4, log2_hashmap_size=6, base_resolution=4, per_level_scale=2.0)  # 64 rows a level
    _, cpp = make_pair("cpp", **config)
    assert not all(lv.dense for lv in cpp.levels)
    torch.manual_seed(4)
    x = torch.rand(100_000, 3)  # 800,000 terms a level on 64 rows
    g = torch.randn(100_000, cpp.n_output_dims)

    def grads() -> tuple[torch.Tensor, torch.Tensor]:
        xx = x.clone().requires_grad_()
        return torch.autograd.grad(cpp(xx), (cpp.params, xx), g)

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        want_p, want_x = grads()
        runs = [grads() for _ in range(4)]
        for threads, cap in ((1, 1 << 24), (3, 1 << 24), (2, 4 * 3 * 30_000)):  # input gradients 30,000 points at a time
            torch.set_num_threads(threads)
            cpp_ext.set_scratch_floats(cap)
            runs.append(grads())
    finally:
        torch.set_num_threads(old)
        cpp_ext.set_scratch_floats(1 << 24)
    differ = [i for i, (gp, gx) in enumerate(runs) if not (torch.equal(gp, want_p) and torch.equal(gx, want_x))]
    assert differ == [], "runs differ: 0-3 repeated with 2 threads, 4: 1 thread, 5: 3 threads, 6: segments"
    x_ref = x.clone().requires_grad_()
    p_ref = cpp.params.detach().clone().requires_grad_()
    gp_ref, gx_ref = torch.autograd.grad(hashgrid_torch(x_ref, p_ref, cpp.levels, 2), (p_ref, x_ref), g)
    torch.testing.assert_close(want_p, gp_ref, rtol=0, atol=1e-5 * gp_ref.abs().max().item())
    torch.testing.assert_close(want_x, gx_ref, rtol=1e-4, atol=1e-4 * gx_ref.abs().max().item())


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_cpp_grads_match_finite_differences(cpp_ext, interpolation):
    _, cpp = make_pair("cpp", interpolation=interpolation, **SMALL)
    torch.manual_seed(3)
    x = torch.rand(64, 3).requires_grad_()
    y = cpp(x)
    g = torch.randn_like(y)
    grad_x, grad_p = torch.autograd.grad(y, (x, cpp.params), g)
    params64 = cpp.params.detach().double()

    def point_losses(xx: torch.Tensor, pp: torch.Tensor) -> torch.Tensor:  # float64 reference, exact function
        return (hashgrid_torch(xx, pp, cpp.levels, 2, interpolation) * g.double()).sum(dim=1)

    # inputs: central differences (points are independent, so one dimension of all points moves at once);
    # the step is far smaller than any cell, so it crosses no cell boundary
    h = 1e-7
    x64 = x.detach().double()
    for d in range(3):
        e = torch.zeros_like(x64)
        e[:, d] = h
        fd = (point_losses(x64 + e, params64) - point_losses(x64 - e, params64)) / (2 * h)
        torch.testing.assert_close(grad_x[:, d].double(), fd, rtol=1e-4, atol=1e-4 * fd.abs().max().item())
    # table: the output is linear in the table, so a directional difference is exact up to rounding
    v = torch.randn_like(params64)
    fd = (point_losses(x64, params64 + v) - point_losses(x64, params64 - v)).sum() / 2
    torch.testing.assert_close((grad_p.double() * v).sum(), fd, rtol=1e-5, atol=1e-5)


def test_cpp_double_backward_matches_torch(cpp_ext):
    """A loss on autograd input gradients (normals) back-propagates to the table like the torch reference."""
    ref, cpp = make_pair("cpp", **SMALL)
    x = torch.rand(50, 3)
    grads = []
    for enc in (ref, cpp):
        xx = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(enc(xx).pow(2).sum(), xx, create_graph=True)
        grads.append(torch.autograd.grad(gx.pow(2).sum(), enc.params)[0])
    assert grads[0].abs().max() > 1.0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5 * grads[0].abs().max().item())


def test_checkpoint_moves_between_backends(cpp_ext):
    ref, cpp = make_pair("cpp", **SMALL)
    other = HashGridEncoding(backend="torch", **SMALL)
    other.load_state_dict(cpp.state_dict())
    x = torch.rand(100, 3)
    torch.testing.assert_close(other(x), cpp(x), rtol=1e-6, atol=1e-6)


# ---------- backend selection and fallback ----------

def test_auto_picks_cpp_on_cpu(cpp_ext):
    assert resolve_backend("auto", torch.device("cpu")) == "cpp"
    with pytest.raises(Dream3DError):
        resolve_backend("cuda", torch.device("cpu"))


def test_fallback_when_extensions_disabled(monkeypatch):
    monkeypatch.setenv("DREAM3D_NO_EXT", "1")
    native.reset()
    try:
        assert resolve_backend("auto", torch.device("cpu")) == "torch"
        with pytest.raises(Dream3DError, match="DREAM3D_NO_EXT"):
            resolve_backend("cpp", torch.device("cpu"))
        enc = HashGridEncoding(**SMALL)
        assert enc(torch.rand(10, 3)).shape == (10, 12)
    finally:
        monkeypatch.delenv("DREAM3D_NO_EXT")
        native.reset()


def test_failed_build_logs_once_and_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("DREAM3D_EXT_SRC", str(tmp_path))  # no sources there
    native.reset()
    try:
        with caplog.at_level(logging.INFO, logger="dream3d"):
            assert native.load("hashgrid", "cpu") is None and native.load("hashgrid", "cpu") is None
            enc = HashGridEncoding(**SMALL)
            enc(torch.rand(4, 3))
            enc(torch.rand(4, 3))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "hash-grid kernel failed" in warnings[0].getMessage()
    finally:
        monkeypatch.delenv("DREAM3D_EXT_SRC")
        native.reset()


def test_no_ext_subprocess_imports_nothing_optional():
    code = (
        "import sys, logging, torch\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from dream3d.encoding import HashGridEncoding\n"
        "assert 'tinycudann' not in sys.modules and 'torch.utils.cpp_extension' not in sys.modules\n"
        "enc = HashGridEncoding(n_levels=2, log2_hashmap_size=10)\n"
        "print(tuple(enc(torch.rand(3, 3)).shape), enc.backend_for(torch.device('cpu')))\n"
    )
    env = dict(os.environ, DREAM3D_NO_EXT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "(3, 4) torch" in res.stdout
    assert "uses backend 'torch' on cpu" in res.stderr
