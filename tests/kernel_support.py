"""The built C++ kernels for tests: a failed build is a test failure; `DREAM3D_NO_EXT` skips."""

import pytest

from dream3d import native


def built_cpu_kernel(kernel: str):
    """The built CPU module of `kernel` ("hashgrid", "splat"), built once per machine and cached."""
    if native.extensions_disabled():
        pytest.skip("DREAM3D_NO_EXT is set")
    module = native.load(kernel, "cpu")
    assert module is not None, f"C++ {kernel} kernel did not build: {native.load_error(kernel, 'cpu')}"
    return module
