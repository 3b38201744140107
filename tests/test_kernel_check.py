"""Self-check of the compiled hash-grid backends against the torch reference (dream3d.encoding.backends).

A kernel whose forward or gradients are deliberately corrupted must be caught: `auto` falls back with exactly one
warning line, an explicit request is a one-line error. The tinycudann path is driven on the CPU through a
stand-in `tinycudann` module that computes the encoding with the reference (a real one is checked on CUDA).
"""

from __future__ import annotations

import logging
import sys
import types

import pytest
import torch
from torch import nn

from dream3d import native
from dream3d.encoding import HashGridEncoding, backends, hashgrid_torch, level_table
from dream3d.encoding.backends import SELF_CHECK_TOLERANCE, compare_with_reference, resolve_backend, self_check
from dream3d.errors import Dream3DError

CPU = torch.device("cpu")
SMALL = dict(n_levels=6, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)
MISMATCH = "disagrees with the torch reference"


@pytest.fixture
def cpp_ext():
    """The built C++ kernel, with fresh self-check verdicts before and after the test."""
    if native.extensions_disabled():
        pytest.skip("DREAM3D_NO_EXT is set")
    ext = native.load("hashgrid", "cpu")
    assert ext is not None, f"C++ hash-grid kernel did not build: {native.load_error('hashgrid', 'cpu')}"
    backends.reset_self_checks()
    yield ext
    backends.reset_self_checks()


def corrupt_forward(monkeypatch, ext, delta: float = 1e-2) -> None:
    """The kernel's forward returns its values plus `delta`."""
    original = ext.forward
    monkeypatch.setattr(ext, "forward", lambda *args: original(*args) + delta)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "dream3d"]


def test_passing_check_is_cheap_and_exact(cpp_ext):
    check = self_check("cpp", CPU)
    assert check.ok and check.error is None
    # float32 kernel vs float32 reference: rounding differences only, far inside the tolerance
    assert check.max_error < SELF_CHECK_TOLERANCE / 10
    assert check.ms < 2000  # a few ms when warm; the first torch call of a process adds its own start-up
    assert compare_with_reference("cpp", CPU).ms < 500
    assert "passed" in check.describe()


def test_check_leaves_training_state_alone(cpp_ext):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with torch.no_grad():  # the first forward of a run may happen under no_grad (occupancy update)
        assert self_check("cpp", CPU).ok
    with torch.inference_mode():
        assert compare_with_reference("cpp", CPU).ok
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.is_grad_enabled()  # the contexts above are restored


def test_corrupted_forward_makes_auto_fall_back_with_one_line(cpp_ext, monkeypatch, caplog):
    corrupt_forward(monkeypatch, cpp_ext)
    enc = HashGridEncoding(**SMALL)  # backend auto
    x = torch.rand(50, 3)
    with caplog.at_level(logging.WARNING, logger="dream3d"):
        assert resolve_backend("auto", CPU) == "torch"
        y = enc(x)
        enc(x)
        assert enc.backend_for(CPU) == "torch"
    lines = warnings_of(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith("hash-grid kernel 'cpp' disagrees with the torch reference on cpu (max error 1.0e-02")
    assert lines[0].endswith("; using 'torch'") and "\n" not in lines[0]
    assert torch.equal(y, hashgrid_torch(x, enc.params, enc.levels, 2, "linear"))
    check = self_check("cpp", CPU)
    assert not check.ok and check.worst.startswith("forward")
    assert check.max_error == pytest.approx(1e-2, rel=1e-3)  # |reference| <= 1: the error is the added 1e-2


def test_corrupted_kernel_requested_explicitly_is_a_one_line_error(cpp_ext, monkeypatch):
    corrupt_forward(monkeypatch, cpp_ext)
    with pytest.raises(Dream3DError, match=f"hash-grid kernel 'cpp' {MISMATCH}") as info:
        HashGridEncoding(backend="cpp", **SMALL)(torch.rand(5, 3))
    assert "\n" not in str(info.value) and "encoding_backend=torch" in str(info.value)


@pytest.mark.parametrize("which, factor, quantity", [(0, 1.01, "table gradient"), (1, -1.0, "input gradient")])
def test_corrupted_gradients_are_caught(cpp_ext, monkeypatch, which, factor, quantity):
    original = cpp_ext.backward

    def backward(*args):
        grads = list(original(*args))
        if grads[which].numel():
            grads[which] = grads[which] * factor
        return grads

    monkeypatch.setattr(cpp_ext, "backward", backward)
    check = self_check("cpp", CPU)
    assert not check.ok and check.worst.startswith(quantity)
    assert resolve_backend("auto", CPU) == "torch"


def test_small_error_within_tolerance_passes(cpp_ext, monkeypatch):
    corrupt_forward(monkeypatch, cpp_ext, SELF_CHECK_TOLERANCE / 4)
    check = self_check("cpp", CPU)
    assert check.ok and check.max_error == pytest.approx(SELF_CHECK_TOLERANCE / 4, rel=1e-2)


def test_kernel_that_raises_falls_back(cpp_ext, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("illegal memory access\nmore detail")

    monkeypatch.setattr(cpp_ext, "forward", broken)
    with caplog.at_level(logging.WARNING, logger="dream3d"):
        assert resolve_backend("auto", CPU) == "torch"
    (line,) = warnings_of(caplog)
    assert "failed its self-check" in line and "RuntimeError: illegal memory access" in line and "\n" not in line


def test_check_runs_once_per_backend_and_device(cpp_ext, monkeypatch):
    calls = []
    original = backends.compare_with_reference

    def counted(backend, device, cases=None):
        calls.append((backend, str(device)))
        return original(backend, device, cases)

    monkeypatch.setattr(backends, "compare_with_reference", counted)
    enc = HashGridEncoding(**SMALL)
    for _ in range(3):
        enc(torch.rand(8, 3))
        resolve_backend("cpp", CPU)
    assert calls == [("cpp", "cpu")]
    assert resolve_backend("torch", CPU) == "torch" and calls == [("cpp", "cpu")]  # torch is never checked


# ---------- tinycudann and the CUDA fallback order, driven on the CPU ----------

class FakeTcnnEncoding(nn.Module):
    """tinycudann.Encoding's interface (n_input_dims, config, dtype; a flat `params`), computed by the reference."""

    offset = 0.0  # added to every output: > 0 plays a broken tinycudann

    def __init__(self, n_input_dims: int, config: dict, dtype: torch.dtype = torch.float32):
        super().__init__()
        assert config["otype"] == "HashGrid"
        self.levels = level_table(n_input_dims, config["n_levels"], config["log2_hashmap_size"],
                                  config["base_resolution"], config["per_level_scale"])
        self.features = config["n_features_per_level"]
        self.interpolation = config["interpolation"].lower()
        size = sum(lv.entries for lv in self.levels) * self.features
        self.params = nn.Parameter(torch.zeros(size, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hashgrid_torch(x, self.params, self.levels, self.features, self.interpolation) + self.offset


@pytest.fixture
def fake_tcnn(monkeypatch):
    """A stand-in `tinycudann` module, `auto` on a (pretend) CUDA device, and checks run on the CPU."""
    module = types.ModuleType("tinycudann")
    module.Encoding = FakeTcnnEncoding
    monkeypatch.setitem(sys.modules, "tinycudann", module)
    monkeypatch.setattr(FakeTcnnEncoding, "offset", 0.0)
    original = backends.compare_with_reference
    monkeypatch.setattr(backends, "compare_with_reference",
                        lambda backend, device, cases=None: original(backend, CPU, cases))
    backends.reset_self_checks()
    yield module
    backends.reset_self_checks()


def test_tcnn_adapter_check_passes_and_catches_a_broken_tcnn(fake_tcnn, monkeypatch):
    check = compare_with_reference("tcnn", CPU)
    assert check.ok, check.describe()
    assert check.max_error < 1e-12  # the stand-in is the reference itself, run through the adapter
    monkeypatch.setattr(FakeTcnnEncoding, "offset", 1e-2)
    check = compare_with_reference("tcnn", CPU)
    assert not check.ok and check.worst.startswith("forward")


def availability_on_cuda(cuda_kernel: bool):
    """backends.availability as on a GPU machine with tinycudann, with or without our CUDA kernel."""
    def available(backend: str, device: torch.device) -> str | None:
        if backend == "tcnn":
            return None
        if backend == "cuda":
            return None if cuda_kernel else "RuntimeError: nvcc not found"
        return "needs CPU tensors" if backend == "cpp" else None
    return available


def test_auto_on_cuda_skips_a_broken_tcnn(fake_tcnn, monkeypatch, caplog):
    monkeypatch.setattr(backends, "availability", availability_on_cuda(cuda_kernel=False))
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda) == "tcnn"
    backends.reset_self_checks()
    monkeypatch.setattr(FakeTcnnEncoding, "offset", 1e-2)
    with caplog.at_level(logging.WARNING, logger="dream3d"):
        assert resolve_backend("auto", cuda) == "torch"
        assert resolve_backend("auto", cuda) == "torch"
    (line,) = warnings_of(caplog)
    assert line.startswith(f"hash-grid kernel 'tcnn' {MISMATCH} on ") and line.endswith("using 'torch'")
    with pytest.raises(Dream3DError, match=f"'tcnn' {MISMATCH}"):
        resolve_backend("tcnn", cuda)


def test_auto_on_cuda_goes_from_a_broken_cuda_kernel_to_tcnn(fake_tcnn, cpp_ext, monkeypatch, caplog):
    monkeypatch.setattr(backends, "availability", availability_on_cuda(cuda_kernel=True))
    real_load = native.load
    monkeypatch.setattr(native, "load", lambda kernel, kind: real_load(kernel, "cpu"))  # the C++ kernel plays the CUDA one
    corrupt_forward(monkeypatch, cpp_ext)
    with caplog.at_level(logging.WARNING, logger="dream3d"):
        assert resolve_backend("auto", torch.device("cuda")) == "tcnn"
    (line,) = warnings_of(caplog)
    assert line.startswith(f"hash-grid kernel 'cuda' {MISMATCH}") and line.endswith("; using 'tcnn'")


# ---------- on a GPU: the real CUDA kernel and tinycudann ----------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backends_pass_their_check():
    backends.reset_self_checks()
    cuda = torch.device("cuda")
    assert native.load("hashgrid", "cuda") is not None, native.load_error("hashgrid", "cuda")
    check = self_check("cuda", cuda)
    assert check.ok and check.max_error < SELF_CHECK_TOLERANCE / 10, check.describe()
    if backends.tcnn_available():
        tcnn = self_check("tcnn", cuda)
        assert tcnn.ok, tcnn.describe()
    assert resolve_backend("auto", cuda) == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_corrupted_cuda_kernel_falls_back_on_gpu(monkeypatch, caplog):
    ext = native.load("hashgrid", "cuda")
    assert ext is not None, native.load_error("hashgrid", "cuda")
    backends.reset_self_checks()
    corrupt_forward(monkeypatch, ext)
    try:
        with caplog.at_level(logging.WARNING, logger="dream3d"):
            chosen = resolve_backend("auto", torch.device("cuda"))
        assert chosen == ("tcnn" if backends.tcnn_available() and self_check("tcnn", torch.device("cuda")).ok
                          else "torch")
        (line,) = warnings_of(caplog)
        assert line.startswith(f"hash-grid kernel 'cuda' {MISMATCH}")
    finally:
        backends.reset_self_checks()
