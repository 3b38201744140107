"""Hash-grid encoding on CUDA: our CUDA kernel (and tinycudann, when installed) against the torch reference.

Skipped without a CUDA device. Needs no numpy.
"""

from __future__ import annotations

import pytest
import torch

from dream3d import native
from dream3d.encoding import HashGridEncoding
from dream3d.encoding.backends import resolve_backend, tcnn_available

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = dict(n_levels=6, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def cuda_ext():
    ext = native.load("hashgrid", "cuda")
    assert ext is not None, f"CUDA hash-grid kernel did not build: {native.load_error('hashgrid', 'cuda')}"
    return ext


def points(n: int, n_dims: int = 3, seed: int = 0) -> torch.Tensor:
    """Random points in a slightly enlarged cube plus cell-boundary and face points."""
    torch.manual_seed(seed)
    special = torch.tensor([[0.0] * n_dims, [1.0] * n_dims, [0.5] * n_dims, [0.0625] * n_dims, [-0.3] * n_dims])
    return torch.cat([special, torch.rand(n, n_dims) * 1.1 - 0.05])


def compare(backend: str, dtype: torch.dtype = torch.float32, n: int = 3000, n_dims: int = 3, **kw) -> None:
    """`backend` on CUDA against the torch reference on the CPU: output, table and input gradients."""
    torch.manual_seed(0)
    ref = HashGridEncoding(backend="torch", n_input_dims=n_dims, **kw)
    with torch.no_grad():
        ref.params.uniform_(-1, 1)
        if dtype != torch.float32:  # the reference sees the values the low-precision table holds
            ref.params.copy_(ref.params.to(dtype).float())
    enc = HashGridEncoding(backend=backend, n_input_dims=n_dims, dtype=dtype, **kw).to(CUDA)
    with torch.no_grad():
        enc.params.copy_(ref.params.to(dtype))
    x = points(n, n_dims)
    x_ref, x_gpu = x.clone().requires_grad_(), x.to(CUDA).requires_grad_()
    y_ref, y_gpu = ref(x_ref), enc(x_gpu)
    assert y_gpu.dtype == torch.float32
    torch.testing.assert_close(y_gpu.cpu(), y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y_ref)
    gp_ref, gx_ref = torch.autograd.grad(y_ref, (ref.params, x_ref), g)
    gp_gpu, gx_gpu = torch.autograd.grad(y_gpu, (enc.params, x_gpu), g.to(CUDA))
    assert gp_gpu.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(gp_gpu.float().cpu(), gp_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx_gpu.cpu(), gx_ref, rtol=1e-4, atol=1e-4 * gx_ref.abs().max().item())


def test_auto_picks_cuda_kernel(cuda_ext):
    assert resolve_backend("auto", CUDA) == "cuda"


@pytest.mark.parametrize("n_features", [1, 2, 4, 8])
@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_cuda_matches_torch(cuda_ext, n_features, interpolation):
    compare("cuda", n_features_per_level=n_features, interpolation=interpolation, **SMALL)


@pytest.mark.parametrize("n_dims", [2, 4])
def test_cuda_matches_torch_other_dims(cuda_ext, n_dims):
    compare("cuda", n_dims=n_dims, **dict(SMALL, log2_hashmap_size=8 if n_dims == 2 else 12))


def test_cuda_full_config(cuda_ext):
    compare("cuda", n=20000)


def test_cuda_half_table(cuda_ext):
    compare("cuda", dtype=torch.float16, **SMALL)


def test_cuda_double_backward(cuda_ext):
    torch.manual_seed(0)
    ref = HashGridEncoding(backend="torch", **SMALL).to(CUDA)
    with torch.no_grad():
        ref.params.uniform_(-1, 1)
    enc = HashGridEncoding(backend="cuda", **SMALL).to(CUDA)
    enc.load_state_dict(ref.state_dict())
    x = points(200).to(CUDA)
    grads = []
    for m in (ref, enc):
        xx = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(m(xx).pow(2).sum(), xx, create_graph=True)
        grads.append(torch.autograd.grad(gx.pow(2).sum(), m.params)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5 * grads[0].abs().max().item())


def test_torch_backend_same_on_cuda_and_cpu():
    compare("torch", **SMALL)


@pytest.mark.skipif(not tcnn_available(), reason="tinycudann not installed")
@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_tcnn_matches_our_definition(interpolation):
    """tinycudann itself, on our parameter layout, agrees with the torch reference (full config)."""
    compare("tcnn", n=20000, interpolation=interpolation)
