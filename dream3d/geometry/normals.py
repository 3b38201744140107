"""Normals of a density field: n = −∇σ / |∇σ| (unit, pointing out of the dense region).

Three ways to get ∇σ, all differentiable w.r.t. the field's parameters:

- ``"finite_difference"``: central differences, 6 extra density evaluations per point, no double backward;
  works with any encoding backend. Error O(eps²).
- ``"forward_difference"``: (σ(x + eps·e_i) − σ(x)) / eps, 3 extra evaluations (σ(x) is shared with the
  render pass when the geometry fuses them): about 40 % fewer encoder queries in shaded CPU steps. Error O(eps).
- ``"analytic"``: autograd of σ w.r.t. the points (``create_graph`` when gradients are being recorded), which
  needs an encoding whose backward is itself differentiable.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

NORMAL_TYPES = ("finite_difference", "forward_difference", "analytic")


def central_difference_points(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The 6 probe points of central differences, stacked as (6,N,3): x+e0, x−e0, x+e1, x−e1, x+e2, x−e2."""
    offsets = torch.eye(3, device=x.device, dtype=x.dtype) * eps  # (3,3)
    offsets = torch.stack([offsets, -offsets], 1).reshape(6, 1, 3)  # +e0, -e0, +e1, ...
    return x[None] + offsets


def normals_from_central(sigma_probe: torch.Tensor, eps: float) -> torch.Tensor:
    """Unit normals (N,3) from densities at the central-difference probes, sigma_probe (6,N) (order as above)."""
    grad = (sigma_probe[0::2] - sigma_probe[1::2]) / (2.0 * eps)  # (3,N) ≈ ∂σ/∂x_i
    return F.normalize(-grad.t(), dim=-1)


def forward_difference_points(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The 3 probe points of forward differences, stacked as (3,N,3): x+e0, x+e1, x+e2."""
    return x[None] + torch.eye(3, device=x.device, dtype=x.dtype)[:, None, :] * eps


def normals_from_forward(sigma: torch.Tensor, sigma_probe: torch.Tensor, eps: float) -> torch.Tensor:
    """Unit normals (N,3) from σ (N,) at the points and at the forward probes, sigma_probe (3,N)."""
    grad = (sigma_probe - sigma[None]) / eps  # (3,N) ≈ ∂σ/∂x_i
    return F.normalize(-grad.t(), dim=-1)


def density_normals(density_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    normal_type: str = "finite_difference", eps: float = 2.0 / 256) -> torch.Tensor:
    """Unit outward normals (N,3) of the field `density_fn` ((N,3) -> (N,)) at points x (N,3) (world units).

    eps: the finite-difference half step (world units); unused by "analytic".
    """
    if normal_type == "finite_difference":
        n = x.shape[0]
        sig = density_fn(central_difference_points(x, eps).reshape(6 * n, 3)).reshape(6, n)
        return normals_from_central(sig, eps)
    if normal_type == "forward_difference":
        n = x.shape[0]
        sig = density_fn(torch.cat([x, forward_difference_points(x, eps).reshape(3 * n, 3)]))
        return normals_from_forward(sig[:n], sig[n:].reshape(3, n), eps)
    if normal_type == "analytic":
        record = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            sigma = density_fn(xg)
            (grad,) = torch.autograd.grad(sigma.sum(), xg, create_graph=record)
        normals = F.normalize(-grad, dim=-1)
        return normals if record else normals.detach()
    raise ValueError(f"unknown normal_type {normal_type!r}; expected one of {NORMAL_TYPES}")
