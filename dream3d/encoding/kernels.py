"""autograd wiring of our compiled kernels (C++ CPU and CUDA share one binding signature).

Kernel binding (both extensions):
  forward(x (N,D) f32, params (P,) f32|f16, scales, res, entries, offsets, dense, F, smoothstep) -> (N, L·F) f32
  backward(grad_out (N,L·F) f32, x, params, <same level lists>, F, smoothstep, need_params, need_x)
      -> [grad_params (P,) f32 (empty if not needed), grad_x (N,D) f32 (empty if not needed)]
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from .levels import LevelInfo
from .reference import hashgrid_torch


@dataclass(frozen=True)
class KernelSpec:
    """Per-level constants handed to a kernel, plus what the torch reference needs for double backward."""

    levels: tuple[LevelInfo, ...]
    n_features: int
    interpolation: str

    def args(self) -> tuple:
        lv = self.levels
        return (
            [l.scale for l in lv],
            [l.resolution for l in lv],
            [l.entries for l in lv],
            [l.offset for l in lv],
            [l.dense for l in lv],
            self.n_features,
            self.interpolation == "smoothstep",
        )


class HashGridKernel(torch.autograd.Function):
    """y = encode(x, params) through a compiled kernel; gradients for params and x from the kernel.

    If a higher-order graph is requested (`create_graph=True`, e.g. a loss on autograd normals), the backward
    is evaluated through the differentiable torch reference instead, so double backward stays correct.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, ext: ModuleType, spec: KernelSpec) -> torch.Tensor:
        ctx.ext, ctx.spec = ext, spec
        ctx.save_for_backward(x, params)
        return ext.forward(x, params, *spec.args())

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, params = ctx.saved_tensors
        need_x, need_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        spec: KernelSpec = ctx.spec
        if torch.is_grad_enabled():  # create_graph=True: differentiable path
            out = hashgrid_torch(x, params, list(spec.levels), spec.n_features, spec.interpolation)
            wrt = [t for t, need in ((x, need_x), (params, need_params)) if need]
            grads = iter(torch.autograd.grad(out, wrt, grad_out, create_graph=True, allow_unused=True))
            gx = next(grads) if need_x else None
            gp = next(grads) if need_params else None
            return gx, gp, None, None
        grad_params, grad_x = ctx.ext.backward(
            grad_out.contiguous().float(), x, params, *spec.args(), need_params, need_x
        )
        gp = grad_params.to(params.dtype) if need_params else None
        gx = grad_x.to(x.dtype) if need_x else None
        return gx, gp, None, None


def kernel_encode(x: torch.Tensor, params: torch.Tensor, ext: ModuleType, spec: KernelSpec) -> torch.Tensor:
    """x: (N, D) float32 contiguous, params (P,) -> (N, L·F) float32 via `ext`."""
    return HashGridKernel.apply(x, params, ext, spec)
