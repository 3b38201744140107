"""3D Gaussians (Kerbl et al. 2023, "3D Gaussian Splatting for Real-Time Radiance Field Rendering", arXiv:2308.04079)
as the geometry of text-to-3D (DreamGaussian, Tang et al. 2023, arXiv:2309.16653).

Each Gaussian i has a mean μ_i (world units), log standard deviations along its local axes, a rotation quaternion
(w, x, y, z; normalised when used), an opacity logit and a colour: `sigmoid` (RGB = sigmoid(feature)) or `sh`
(spherical harmonics of degree 0 or 1 in the 3DGS convention: RGB = max(0, 0.5 + C0·dc + degree-1 terms)).
Its density in space is o_i·exp(−½ (x − μ_i)ᵀ Σ_i⁻¹ (x − μ_i)) with Σ_i = R S Sᵀ Rᵀ; the field of the cloud is the
sum, which the export meshes (`density_grid`: evaluated locally, each Gaussian on the grid vertices within 3σ).

The Gaussian count changes during training (`densify_and_prune`): the parameters keep their identity (their
`.data` is replaced), so an optimizer built once keeps working; its Adam moments are edited row by row with the
parameters (kept rows keep theirs, new rows start at zero, as 3DGS and gsplat do). A state_dict of another count
loads into a cloud built with the config's initial count (`_load_from_state_dict` resizes first), so a checkpoint
of a densified run resumes exactly.

Densification (3DGS): the view-space positional gradient of each Gaussian (the gradient of the loss w.r.t. its
projected centre, in normalised device units: pixels · (W/2, H/2), times the number of cameras as gsplat does so
that the figure does not depend on the batch size) is accumulated over the views that see it; every few steps the
Gaussians whose mean gradient reaches a threshold are cloned (small ones: max scale <= percent_dense · extent) or
split in two (large ones: children drawn from the parent's Gaussian, scales / 1.6); then Gaussians with a low
opacity, a world size above a fraction of the extent, or a screen size above a fraction of the image are removed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from dream3d.errors import ConfigError

SH_C0 = 0.28209479177387814  # Y_0^0
SH_C1 = 0.4886025119029199  # |Y_1^m|
COLOR_MODES = ("sigmoid", "sh")
PER_GAUSSIAN = ("means", "log_scales", "quats", "opacity_logits", "colors", "sh_rest")  # parameters, row = Gaussian
STATISTICS = ("grad_accum", "grad_count", "max_radii")  # densification buffers, row = Gaussian
SPLIT_CHILDREN = 2
SPLIT_SHRINK = 0.8 * SPLIT_CHILDREN  # children's scales = parent's / 1.6 (3DGS)


def quaternion_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N,3,3) of quaternions (N,4) (w,x,y,z), normalised first; columns are the local axes."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)


def sphere_points(n: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """n points (n,3) uniform in the ball of `radius` (DreamGaussian's initialisation)."""
    direction = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    r = radius * torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1.0 / 3.0)
    return (direction * r).float()


def neighbour_scale(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """sqrt of the mean squared distance (N,) of each point to its k nearest others (3DGS's initial scale)."""
    n = points.shape[0]
    if n <= 1:
        return torch.full((n,), 0.05)
    k = min(k, n - 1)
    out = []
    for s in range(0, n, chunk):
        d2 = torch.cdist(points[s:s + chunk], points).square()
        d2[torch.arange(d2.shape[0]), torch.arange(s, s + d2.shape[0])] = float("inf")
        out.append(d2.topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(out).clamp_min(1e-14).sqrt()


class GaussianCloud(nn.Module):
    """N anisotropic 3D Gaussians inside [-bound, bound]^3 (see the module doc).

    Args:
        num_points: initial count, uniform in the ball of `init_radius` around the origin; scales from the mean
            distance to the 3 nearest neighbours, opacity `init_opacity`, colour mid grey, no rotation.
        sh_degree: 0 or 1 (`color="sh"` only); color: "sigmoid" | "sh"; seed: the initialisation's generator.
    """

    def __init__(self, num_points: int = 5000, bound: float = 1.0, init_radius: float = 0.5,
                 init_opacity: float = 0.1, sh_degree: int = 0, color: str = "sigmoid", seed: int = 0) -> None:
        super().__init__()
        if color not in COLOR_MODES:
            raise ConfigError(f"unknown Gaussian colour mode {color!r}; expected one of {', '.join(COLOR_MODES)}")
        if sh_degree not in (0, 1) or (color == "sigmoid" and sh_degree != 0):
            raise ConfigError("gaussian.sh_degree must be 0 or 1, and 0 with gaussian.color=sigmoid")
        self.bound, self.sh_degree, self.color_mode = float(bound), int(sh_degree), color
        gen = torch.Generator().manual_seed(int(seed))
        n = int(num_points)
        means = sphere_points(n, init_radius, gen)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        self.means = nn.Parameter(means)
        self.log_scales = nn.Parameter(neighbour_scale(means).log()[:, None].repeat(1, 3))
        self.quats = nn.Parameter(quats)
        self.opacity_logits = nn.Parameter(torch.full((n,), math.log(init_opacity / (1 - init_opacity))))
        self.colors = nn.Parameter(torch.zeros(n, 3))  # sigmoid(0) = 0.5 | 0.5 + C0·0 = 0.5
        self.sh_rest = nn.Parameter(torch.zeros(n, (self.sh_degree + 1) ** 2 - 1, 3))
        for name in STATISTICS:
            self.register_buffer(name, torch.zeros(n))

    # --- values -------------------------------------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def scales(self) -> torch.Tensor:
        """(N,3) standard deviations along the local axes, world units."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        """(N,) in (0,1)."""
        return torch.sigmoid(self.opacity_logits)

    def base_colors(self) -> torch.Tensor:
        """(N,3) view-independent RGB in [0,1] (the degree-0 part)."""
        if self.color_mode == "sigmoid":
            return torch.sigmoid(self.colors)
        return (0.5 + SH_C0 * self.colors).clamp(0.0, 1.0)

    def view_colors(self, camera_position: torch.Tensor) -> torch.Tensor:
        """(N,3) RGB in [0,1] seen from `camera_position` (3,) (3DGS's SH evaluation; = base_colors at degree 0)."""
        if self.sh_degree == 0:
            return self.base_colors()
        d = self.means - camera_position.to(self.means)
        x, y, z = (d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)).unbind(-1)
        rest = self.sh_rest
        rgb = 0.5 + SH_C0 * self.colors - SH_C1 * (y[:, None] * rest[:, 0] - z[:, None] * rest[:, 1]
                                                   + x[:, None] * rest[:, 2])
        return rgb.clamp(0.0, 1.0)

    def normals(self) -> torch.Tensor:
        """(N,3) unit shortest-axis direction of each Gaussian, turned away from the origin (outward for objects
        around the origin): the normal of a flat Gaussian (GaussianShader, Jiang et al. 2023, arXiv:2311.17977,
        takes the shortest axis as the normal too; it orients it towards the camera instead)."""
        rot = quaternion_to_rotation(self.quats)
        axis = self.log_scales.argmin(-1)
        n = rot.gather(2, axis[:, None, None].expand(-1, 3, 1))[..., 0]
        sign = torch.where((n * self.means).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        return n * sign

    # --- the density field --------------------------------------------------------------------------------------
    @torch.no_grad()
    def density_grid(self, resolution: int, min_opacity: float = 0.005,
                     max_points: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
        """The density Σ_i o_i exp(−½ d_iᵀ Σ_i⁻¹ d_i) at the vertices of a resolution^3 grid over the box,
        (R+1,R+1,R+1) indexed [x, y, z], and the density-weighted base colour Σ_i w_i c_i there (R+1,R+1,R+1,3).

        Local evaluation: each Gaussian adds to the grid vertices inside its 3σ bounding box (3 · its largest
        standard deviation) and within Mahalanobis distance 3; Gaussians below `min_opacity` are skipped.
        Gaussians are processed in groups whose boxes have the same side, max_points (Gaussian, vertex) pairs at
        a time. float32, on the cloud's device.
        """
        b, n1 = self.bound, resolution + 1
        h = 2.0 * b / resolution
        keep = self.opacities > min_opacity
        mu, opa = self.means[keep].float(), self.opacities[keep].float()
        inv = quaternion_to_rotation(self.quats[keep]).float() / self.scales[keep].float()[:, None, :]  # R S⁻¹
        rgb = self.base_colors()[keep].float()
        reach = 3.0 * self.scales[keep].float().amax(-1, keepdim=True)
        lo = torch.ceil((mu - reach + b) / h).clamp(0, resolution).long()
        hi = torch.floor((mu + reach + b) / h).clamp(-1, resolution).long()
        side = (hi - lo + 1).clamp_min(0).amax(-1)  # (G,) vertices per axis of the box (its largest extent)
        density = mu.new_zeros(n1 ** 3)
        colour = mu.new_zeros(n1 ** 3, 3)
        for k in torch.unique(side[side > 0]).tolist():
            group = (side == k).nonzero()[:, 0]
            r = torch.arange(k, device=mu.device)
            offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)  # (k^3,3)
            per = max(1, max_points // offsets.shape[0])
            for s in range(0, group.shape[0], per):
                g = group[s:s + per]
                idx = lo[g][:, None, :] + offsets[None]  # (g,k^3,3)
                inside = (idx <= hi[g][:, None, :]).all(-1)
                idx = idx.clamp_max(resolution)
                d = idx.float() * h - b - mu[g][:, None, :]
                m = torch.einsum("gpi,gij->gpj", d, inv[g]).square().sum(-1)
                w = torch.where(inside & (m < 9.0), opa[g][:, None] * torch.exp(-0.5 * m), torch.zeros_like(m))
                flat = ((idx[..., 0] * n1 + idx[..., 1]) * n1 + idx[..., 2]).reshape(-1)
                density.index_add_(0, flat, w.reshape(-1))
                colour.index_add_(0, flat, (w[..., None] * rgb[g][:, None, :]).reshape(-1, 3))
        return density.reshape(n1, n1, n1), colour.reshape(n1, n1, n1, 3)

    # --- changing the count -------------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Resize the per-Gaussian tensors to the saved count before loading (identity kept, see module doc)."""
        for name in PER_GAUSSIAN + STATISTICS:
            saved = state_dict.get(prefix + name)
            t = getattr(self, name)
            if saved is not None and saved.shape[1:] == t.shape[1:] and saved.shape[0] != t.shape[0]:
                t.data = t.new_zeros(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @torch.no_grad()
    def _edit_rows(self, edit, optimizer: torch.optim.Optimizer | None) -> None:
        """Apply `edit(tensor, zero_new)` to every per-Gaussian tensor along rows: the parameters (new rows copied
        from their sources), their Adam moments (new rows zero) and the statistics (all zero afterwards)."""
        for name in PER_GAUSSIAN:
            p = getattr(self, name)
            p.data = edit(p.data, False)
            p.grad = None
            state = optimizer.state.get(p) if optimizer is not None else None
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if state and torch.is_tensor(state.get(key)) and state[key].dim() > 0:
                    state[key] = edit(state[key], True)
        for name in STATISTICS:
            setattr(self, name, torch.zeros(self.num_gaussians, device=self.means.device))

    def add_statistics(self, means2d_grad: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> None:
        """Accumulate the view-space positional gradient of one render (see the module doc).

        means2d_grad: (C,N,2) d loss / d projected centre (pixels); radii: (C,N) pixel radii (0 = not visible).
        """
        with torch.no_grad():
            c = means2d_grad.shape[0]
            g = means2d_grad * means2d_grad.new_tensor([0.5 * width, 0.5 * height]) * c
            seen = radii > 0
            self.grad_accum += torch.where(seen, g.norm(dim=-1), torch.zeros_like(g[..., 0])).sum(0)
            self.grad_count += seen.sum(0).to(self.grad_count.dtype)
            frac = radii.to(self.max_radii.dtype) / max(width, height)
            self.max_radii.copy_(torch.maximum(self.max_radii, frac.amax(0)))

    @torch.no_grad()
    def densify_and_prune(self, optimizer: torch.optim.Optimizer | None, grad_threshold: float,
                          split_scale: float, min_opacity: float, max_world_scale: float,
                          max_screen_fraction: float, generator: torch.Generator | None = None,
                          max_gaussians: int = 0) -> dict[str, int]:
        """Clone, split, then prune (see the module doc); returns {"cloned", "split", "pruned", "gaussians"}.

        grad_threshold: mean view-space gradient (NDC units) from which a Gaussian densifies; split_scale: the
        largest scale (world units) of a Gaussian that is cloned, larger ones are split; min_opacity,
        max_world_scale (world units; 0: off), max_screen_fraction (of the image side; 0: off): pruning.
        max_gaussians: no densification once the count reaches it (0: no cap). New rows go after the kept ones:
        [kept originals, clones, split children] (3DGS's order).
        """
        n = self.num_gaussians
        grads = self.grad_accum / self.grad_count.clamp_min(1)
        high = (grads >= grad_threshold) & (self.grad_count > 0)
        if max_gaussians and n >= max_gaussians:
            high &= False
        big = self.scales.amax(-1) > split_scale
        clone, split = high & ~big, high & big
        n_clone, n_split = int(clone.sum()), int(split.sum())
        children = None
        if n_split:
            std = self.scales[split].repeat(SPLIT_CHILDREN, 1)
            noise = torch.randn(std.shape, generator=generator, dtype=torch.float32).to(std) * std
            rot = quaternion_to_rotation(self.quats[split]).repeat(SPLIT_CHILDREN, 1, 1)
            children = torch.einsum("nij,nj->ni", rot, noise) + self.means[split].repeat(SPLIT_CHILDREN, 1)
        rows = torch.cat([(~split).nonzero()[:, 0], clone.nonzero()[:, 0],
                          split.nonzero()[:, 0].repeat(SPLIT_CHILDREN)])
        n_kept = n - n_split

        def grow(t: torch.Tensor, zero_new: bool) -> torch.Tensor:
            out = t[rows].clone()
            if zero_new:
                out[n_kept:] = 0
            return out

        # screen sizes are measured on the rows before densifying: clones inherit them, split children do not
        on_screen = self.max_radii > max_screen_fraction if max_screen_fraction > 0 else torch.zeros_like(high)
        on_screen = on_screen[rows]
        on_screen[n_kept + n_clone:] = False
        if n_clone or n_split:
            self._edit_rows(grow, optimizer)
            if n_split:
                self.means.data[n_kept + n_clone:] = children
                self.log_scales.data[n_kept + n_clone:] -= math.log(SPLIT_SHRINK)
        prune = (self.opacities < min_opacity) | on_screen
        if max_world_scale > 0:
            prune |= self.scales.amax(-1) > max_world_scale
        if bool(prune.all()):
            prune[self.opacities.argmax()] = False  # never an empty cloud
        n_prune = int(prune.sum())
        keep_rows = (~prune).nonzero()[:, 0]
        self._edit_rows(lambda t, zero_new: t[keep_rows].clone(), optimizer)
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune, "gaussians": self.num_gaussians}

    @torch.no_grad()
    def reset_opacity(self, optimizer: torch.optim.Optimizer | None, ceiling: float = 0.01) -> None:
        """Opacities above `ceiling` set to it, their Adam moments zeroed (3DGS's opacity reset)."""
        logit = math.log(ceiling / (1 - ceiling))
        self.opacity_logits.data.clamp_(max=logit)
        state = optimizer.state.get(self.opacity_logits) if optimizer is not None else None
        for key in ("exp_avg", "exp_avg_sq"):
            if state and torch.is_tensor(state.get(key)):
                state[key].zero_()
