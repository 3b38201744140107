"""Volume renderer: cameras -> {rgb, opacity, depth, normal} of a density/albedo geometry over a background.

Rays cross the world box [-bound, bound]^3 on a fixed-step lattice (dt = 2·√3·bound / num_samples_per_ray, so
the box diagonal holds `num_samples_per_ray` steps; see `marching`), jittered per ray in training. Samples in
cells the occupancy grid marks empty are skipped before the geometry is queried — that is the speed win on
CPU; only the kept samples are packed, evaluated, shaded and composited:

    rgb = Σ_k w_k c_k + (1 − opacity) · background,   opacity = Σ_k w_k,   w_k = T_k (1 − exp(−σ_k dt))

Backends: "torch" (any device), "nerfacc" (CUDA; nerfacc 0.5.x sampling and weights on the same grid and
lattice), "auto" (nerfacc on CUDA when it loads, else torch; the choice is logged).

Training loop contract: call `update_occupancy(step)` at the start of every training step (it acts every
`occ_update_every` steps); the grid's buffers are in `state_dict()`.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn

from dream3d.cameras import Cameras, camera_rays, light_directions
from dream3d.errors import ConfigError
from dream3d.geometry.background import SolidBackground
from dream3d.render.marching import PackedSamples, accumulate, composite_weights, march, visibility
from dream3d.render.nerfacc_backend import NerfaccMarcher, nerfacc_available
from dream3d.render.occupancy import OccupancyGrid
from dream3d.render.output import RenderOut
from dream3d.render.shading import check_shading, needs_normals, shade

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "nerfacc")


class VolumeRenderer(nn.Module):
    """Renders any geometry with the geometry interface (see dream3d.geometry) through an occupancy grid.

    Args:
        geometry: the field (`bound`, `forward`, `density`, `normals`; `forward_with_normals` if it has one).
        background: a module dirs (...,3) -> rgb (...,3); default white.
        num_samples_per_ray: lattice steps along the box diagonal (sets dt; shorter chords get fewer samples).
        grid_resolution, occ_*: occupancy grid settings (OccupancyGrid); use_occupancy=False samples densely.
        near_plane: samples start at this distance from the camera (world units).
        early_stop_eps, alpha_thre: drop samples with transmittance T < early_stop_eps or α < alpha_thre (the
            latter capped at the grid's mean occupancy value, as nerfacc does) before the geometry is queried
            with gradients; costs one extra no-grad density pass over the grid-kept samples and pays off once
            surfaces are opaque (T < 1e-4 changes no pixel by more than 1e-4). Both 0: single pass.
        backend: "auto" | "torch" | "nerfacc".
    """

    def __init__(self, geometry: nn.Module, background: nn.Module | None = None, num_samples_per_ray: int = 64,
                 grid_resolution: int = 32, use_occupancy: bool = True, occ_update_every: int = 16,
                 occ_ema_decay: float = 0.95, occ_threshold: float = 0.01, occ_warmup_steps: int = 256,
                 near_plane: float = 0.0, early_stop_eps: float = 1e-4, alpha_thre: float = 0.0,
                 backend: str = "auto") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ConfigError(f"unknown render backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.geometry = geometry
        self.background = background if background is not None else SolidBackground()
        self.bound = float(geometry.bound)
        self.num_samples_per_ray = int(num_samples_per_ray)
        self.render_step_size = 2.0 * math.sqrt(3.0) * self.bound / self.num_samples_per_ray
        self.use_occupancy = use_occupancy
        self.near_plane = float(near_plane)
        self.early_stop_eps, self.alpha_thre = float(early_stop_eps), float(alpha_thre)
        self.backend = backend
        self.occupancy = OccupancyGrid(self.bound, grid_resolution, occ_ema_decay, occ_threshold, occ_warmup_steps,
                                       occ_update_every)
        self._nerfacc = NerfaccMarcher()
        self._resolved: dict[torch.device, str] = {}

    # --- backend -----------------------------------------------------------------------------------------------
    def resolved_backend(self, device: torch.device) -> str:
        """The marcher used on `device` ("torch" or "nerfacc"), decided once per device and logged."""
        device = torch.device(device)
        if device not in self._resolved:
            if self.backend == "torch":
                choice = "torch"
            elif device.type != "cuda":
                if self.backend == "nerfacc":
                    raise ConfigError("render backend 'nerfacc' needs a CUDA device; use backend=auto or torch")
                choice = "torch"
            else:
                ok = nerfacc_available()
                if self.backend == "nerfacc" and not ok:
                    raise ConfigError("render backend 'nerfacc' is not available (pip install nerfacc; needs nvcc)")
                choice = "nerfacc" if ok else "torch"
            log.info("volume renderer backend on %s: %s", device, choice)
            self._resolved[device] = choice
        return self._resolved[device]

    # --- occupancy ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_occupancy(self, step: int, generator: torch.Generator | None = None) -> bool:
        """EMA-update the occupancy grid from σ·dt when `step % occ_update_every == 0`; returns whether it ran."""
        return self.occupancy.update(step, lambda x: self.geometry.density(x) * self.render_step_size, generator)

    def stats(self) -> dict[str, float]:
        """{"occupied": fraction of occupancy-grid cells marked occupied}."""
        return {"occupied": self.occupancy.occupied_fraction}

    # --- rendering ---------------------------------------------------------------------------------------------
    def _query(self, pts: torch.Tensor, with_normals: bool):
        g = self.geometry
        if not with_normals:
            sigma, albedo = g(pts)
            return sigma, albedo, None
        if hasattr(g, "forward_with_normals"):
            return g.forward_with_normals(pts)
        sigma, albedo = g(pts)
        return sigma, albedo, g.normals(pts)

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor, light_dirs: torch.Tensor,
                    shading: str = "albedo", bg_rgb: torch.Tensor | None = None, stratified: bool = False,
                    generator: torch.Generator | None = None, with_normal: bool | None = None) -> dict:
        """Render N rays. origins, dirs (unit), light_dirs (unit, towards the light): (N,3), world space.

        bg_rgb (N,3) replaces the background module's colour when given. Returns rgb (N,3), opacity (N,1),
        depth (N,1) = Σ w·t (un-normalised: divide by opacity for the expected hit distance), and, when normals
        are computed (`with_normal`, default: when the shading needs them), normal (N,3) = Σ w·n and
        orient (N,1) = Σ sg(w)·max(0, n·d)² (DreamFusion's orientation penalty: gradients reach the normals only,
        not the weights); n_samples: samples queried.
        """
        check_shading(shading)
        want_normals = needs_normals(shading) if with_normal is None else (with_normal or needs_normals(shading))
        n, step = origins.shape[0], self.render_step_size
        jitter = None
        if stratified:
            gen_device = generator.device if generator is not None else origins.device
            jitter = torch.rand(n, generator=generator, device=gen_device).to(origins.device) * step
        backend = self.resolved_backend(origins.device)
        grid = self.occupancy if self.use_occupancy else None
        prune = self.early_stop_eps > 0 or self.alpha_thre > 0
        if backend == "nerfacc":
            samples, intervals = self._nerfacc.march(origins, dirs, self.occupancy, step, jitter, self.near_plane,
                                                     self.use_occupancy, self.geometry.density if prune else None,
                                                     self.early_stop_eps, self.alpha_thre)
        else:
            samples, intervals = march(origins, dirs, self.bound, step, grid, jitter, self.near_plane), None
            if prune and samples.ray.shape[0] > 0:
                samples = self._prune(samples, origins, dirs)

        bg = bg_rgb if bg_rgb is not None else self.background(dirs)
        out = self._shade_and_composite(samples, origins, dirs, light_dirs, shading, want_normals, intervals)
        out["rgb"] = out["rgb"] + (1.0 - out["opacity"]) * bg
        return out

    @torch.no_grad()
    def _prune(self, samples: PackedSamples, origins: torch.Tensor, dirs: torch.Tensor) -> PackedSamples:
        """Drop invisible samples (see `early_stop_eps`) with one no-grad density pass."""
        sigma = self.geometry.density(origins[samples.ray] + samples.t_mid[:, None] * dirs[samples.ray])
        alpha_thre = min(self.alpha_thre, float(self.occupancy.occs.mean()))
        return samples.select(visibility(sigma, samples, self.render_step_size, self.early_stop_eps, alpha_thre))

    def _shade_and_composite(self, samples: PackedSamples, origins: torch.Tensor, dirs: torch.Tensor,
                             light_dirs: torch.Tensor, shading: str, want_normals: bool,
                             intervals: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
        """Query, shade and composite packed samples; `intervals` (nerfacc's t_starts, t_ends) selects nerfacc's
        weights, None the torch compositing."""
        n, ray = samples.n_rays, samples.ray
        m = ray.shape[0]
        out: dict = {"n_samples": m}
        if m == 0:
            z = origins.new_zeros(n, 1)
            out.update(rgb=origins.new_zeros(n, 3), opacity=z, depth=z)
            if want_normals:
                out.update(normal=origins.new_zeros(n, 3), orient=z)
            return out
        d = dirs[ray]
        pts = origins[ray] + samples.t_mid[:, None] * d
        sigma, albedo, normals = self._query(pts, want_normals)
        if intervals is not None:
            w = self._nerfacc.weights(sigma, samples, intervals)
        else:
            w = composite_weights(sigma, samples, self.render_step_size)
        color = shade(albedo, normals, light_dirs[ray], shading)
        out["rgb"] = accumulate(w, color, ray, n)
        out["opacity"] = accumulate(w, None, ray, n)
        out["depth"] = accumulate(w, samples.t_mid[:, None], ray, n)
        if want_normals:
            out["normal"] = accumulate(w, normals, ray, n)
            facing = (normals * d).sum(-1, keepdim=True).clamp_min(0.0) ** 2
            out["orient"] = accumulate(w.detach(), facing, ray, n)  # stop-grad weights, as in DreamFusion
        return out

    def _rays(self, cams: Cameras, height: int, width: int, light_dirs: torch.Tensor | None,
              bg_color: torch.Tensor | None):
        device = self.occupancy.occs.device
        cams = cams.to(device)
        b, hw = len(cams), height * width
        origins, dirs = camera_rays(cams, height, width)
        light = light_directions(cams) if light_dirs is None else torch.as_tensor(light_dirs).to(device)
        light = light.reshape(-1, 3).float().expand(b, 3).repeat_interleave(hw, 0)
        bg = None
        if bg_color is not None:
            bg = torch.as_tensor(bg_color, dtype=torch.float32).to(device).reshape(-1, 3).expand(b, 3)
            bg = bg.repeat_interleave(hw, 0)
        return origins.reshape(-1, 3), dirs.reshape(-1, 3), light, bg

    @staticmethod
    def _to_images(out: dict, b: int, height: int, width: int) -> RenderOut:
        """Ray-ordered (B·H·W, C) results -> a `RenderOut` of (B,C,H,W) images."""
        img = {k: v.reshape(b, height, width, -1).permute(0, 3, 1, 2) for k, v in out.items() if torch.is_tensor(v)}
        return RenderOut(n_samples=int(out["n_samples"]), **img)

    def forward(self, cams: Cameras, height: int, width: int, shading: str = "albedo",
                light_dirs: torch.Tensor | None = None, generator: torch.Generator | None = None,
                with_normal: bool | None = None, stratified: bool | None = None,
                bg_color: torch.Tensor | None = None) -> RenderOut:
        """Render B cameras at height x width.

        shading: "albedo" | "lambertian" | "textureless"; light_dirs: (B,3) or (3,) unit directions towards the
        light (default `cameras.light_directions`); generator: draws the per-ray jitter; stratified: default
        `self.training`; bg_color: (3,) or (B,3) solid colour replacing the background module for this call.

        Returns a `RenderOut`: rgb, opacity, depth, and normal and orient when normals are computed, n_samples.
        """
        origins, dirs, light, bg = self._rays(cams, height, width, light_dirs, bg_color)
        stratified = self.training if stratified is None else stratified
        out = self.render_rays(origins, dirs, light, shading, bg, stratified, generator, with_normal)
        return self._to_images(out, len(cams), height, width)

    @torch.no_grad()
    def render_chunked(self, cams: Cameras, height: int, width: int, shading: str = "albedo",
                       light_dirs: torch.Tensor | None = None, chunk_rays: int = 16384, with_normal: bool = True,
                       bg_color: torch.Tensor | None = None) -> RenderOut:
        """Evaluation render (no grad, no jitter) in chunks of rays, for previews and turntables at any size.

        Same outputs as `forward` (normal and orient included by default).
        """
        origins, dirs, light, bg = self._rays(cams, height, width, light_dirs, bg_color)
        parts: list[dict] = []
        for s in range(0, origins.shape[0], chunk_rays):
            sl = slice(s, s + chunk_rays)
            parts.append(self.render_rays(origins[sl], dirs[sl], light[sl], shading,
                                          None if bg is None else bg[sl], False, None, with_normal))
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if torch.is_tensor(parts[0][k])}
        out["n_samples"] = sum(p["n_samples"] for p in parts)
        return self._to_images(out, len(cams), height, width)
