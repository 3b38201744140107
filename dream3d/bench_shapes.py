"""`dream3d bench shapes`: generation quality against the shapes world's ground truth.

Per (method, prompt, seed) a full generation runs, then:
- iou: 3D IoU (on a 128^3 grid of cell centres) between the occupancy that export extracts — the density above
  the export's automatic iso level — and the true primitive;
- silhouette_iou: mean IoU of rendered opacity > 0.5 and the true silhouette over 16 views (8 azimuths x
  elevations 0 and 40 degrees); for the mesh stage, of the pixel centres the mesh covers (its exact silhouette;
  the rasterizer's antialiasing, a device for edge gradients, can dim a covered corner pixel below 0.5);
- chamfer: symmetric Chamfer distance (world units) between the exported surface's vertices and the true surface;
- seconds: wall time of the generation.

`stages` (`--stages nerf,mesh`): after the NeRF run, the mesh stage (`dream3d refine` with configs/mesh.yaml)
runs on it and is scored the same way, with the DMTet mesh itself as the surface (occupancy by ray parity,
Chamfer on area-uniform surface samples); every row carries its `stage` and the mesh row's seconds are the mesh
stage's own (initialisation included). `gaussian` trains configs/gaussian.yaml (or `--config` when it is the
only stage) on the same prompt and seed and scores the mesh its export extracts (the density field's surface at
the automatic level, floaters removed), likewise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from dream3d.cameras import make_cameras
from dream3d.config import load_config
from dream3d.errors import Dream3DError
from dream3d.geometry.gaussians import GaussianCloud
from dream3d.recipes import config_file, recipe_path
from dream3d.shapes.metrics import chamfer_to_shape, volume_iou
from dream3d.shapes.primitives import SHAPES, grid_points, occupancy
from dream3d.shapes.prompts import make_prompt, parse_prompt
from dream3d.shapes.render import render_shapes

BENCH_COLORS = ("red", "blue")
STAGES = ("nerf", "mesh", "gaussian")


def default_prompts() -> list[str]:
    """Every shape in two colors."""
    return [make_prompt(c, s) for s in SHAPES for c in BENCH_COLORS]


@torch.no_grad()
def score_geometry(renderer, shape: str, grid_resolution: int = 128, export_resolution: int = 128) -> dict:
    """iou / silhouette_iou / chamfer of a trained renderer's geometry against the true `shape`."""
    from dream3d.export.fields import geometry_device
    from dream3d.export.surface import extract_surface

    geometry = renderer.geometry
    device = geometry_device(geometry)
    if isinstance(geometry, GaussianCloud):  # Gaussian stage: the exported mesh of the density field
        from dream3d.export.gaussian_export import extract_gaussian_surface

        surface, _ = extract_gaussian_surface(renderer, export_resolution, smooth_iterations=0, max_faces=0)
        mesh = SimpleNamespace(vertices=torch.from_numpy(surface.vertices), faces=torch.from_numpy(surface.faces))
    elif hasattr(geometry, "extract_mesh"):  # mesh stage: the DMTet mesh is the surface
        mesh = geometry.extract_mesh()
    if isinstance(geometry, GaussianCloud) or hasattr(geometry, "extract_mesh"):
        from dream3d.geometry.mesh_ops import mesh_occupancy
        from dream3d.stages.nerf_to_dmtet import surface_samples

        occ = mesh_occupancy(mesh.vertices, mesh.faces, grid_resolution, geometry.bound)
        points = surface_samples(mesh.vertices.cpu().double(), mesh.faces.cpu(), 20000,
                                 torch.Generator().manual_seed(0))[0].float()
        level = float("nan")
    else:
        surface = extract_surface(geometry, export_resolution, max_faces=0, smooth_iterations=0)
        pts = grid_points(grid_resolution, geometry.bound).reshape(-1, 3)
        dens = torch.cat([geometry.density(p.to(device)).cpu() for p in pts.split(262144)])
        occ = (dens > surface.level).reshape((grid_resolution,) * 3)
        points, level = torch.from_numpy(surface.vertices), surface.level
    iou = volume_iou(occ, occupancy(shape, grid_resolution, geometry.bound))
    cams = make_cameras(torch.tensor([0.0] * 8 + [40.0] * 8), torch.arange(16) % 8 * 45.0)
    if hasattr(geometry, "extract_mesh"):  # a mesh's silhouette: the pixel centres it covers (no antialiasing)
        a = renderer.rasterizer.rasterize(mesh.vertices, mesh.faces, cams.to(device), 64, 64).face_id.cpu() >= 0
    else:
        out = renderer.render_chunked(cams.to(device), 64, 64, shading="albedo", with_normal=False)
        a = out.opacity[:, 0].cpu() > 0.5
    _, truth = render_shapes([shape] * 16, ["red"] * 16, cams, 64)
    b = truth[:, 0] > 0.5
    sil = ((a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1).clamp_min(1)).mean().item()
    chamfer = chamfer_to_shape(points, shape)
    return {"iou": iou, "silhouette_iou": sil, "chamfer": chamfer, "level": level}


def bench_shapes(methods: list[str], prompts_file: str | None = None, seeds: list[int] = (0, 1),
                 steps: int | None = None, json_path: str | None = None, config: str | None = None,
                 out_root: str = "outputs/bench", overrides: list[str] = (), log=print,
                 stages: tuple[str, ...] | list[str] = ("nerf",)) -> list[dict]:
    """Run every (method, prompt, seed) through the stages; print a per-row line and a mean table; return the rows.

    With `json_path`, rows already in that file (same method, stage, prompt, seed and steps) are kept and not rerun,
    so an interrupted benchmark continues where it stopped.
    """
    from dream3d.pipeline import mesh_stage_config
    from dream3d.run_folder import RunFolder
    from dream3d.trainer import Trainer

    unknown = [st for st in stages if st not in STAGES]
    if unknown or not stages:
        raise Dream3DError(f"unknown stage {', '.join(unknown) or '(none)'}; choose from {', '.join(STAGES)}")
    prompts = default_prompts()
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise Dream3DError(f"prompts file not found: {path}")
        prompts = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    parsed = [parse_prompt(p) for p in prompts]  # shapes-world prompts only: the truth must be known
    rows: list[dict] = []
    if json_path and Path(json_path).is_file():
        rows = json.loads(Path(json_path).read_text())
        log(f"continuing {json_path}: {len(rows)} rows already done")
    done = {(r["method"], r.get("stage", "nerf"), r["prompt"], r["seed"], r.get("steps")) for r in rows}
    prior = None
    for method in methods:
        cfg_file = config_file(config) if config else recipe_path(method)
        only_gaussian = "nerf" not in stages and "mesh" not in stages  # --config is then the Gaussian recipe
        gaussian_file = config_file(config) if config and only_gaussian else recipe_path("gaussian")
        for prompt, sp in zip(prompts, parsed):
            for seed in seeds:
                if all((method, st, prompt, seed, steps) in done for st in stages):
                    continue
                run_dir = Path(out_root) / f"{method}-{sp.color}-{sp.shape}-s{seed}"
                over = [f"guidance.method={method}", f"seed={seed}", "export.enabled=false", *overrides]
                if steps is not None:
                    over.append(f"steps={steps}")
                plan = [("nerf", cfg_file, run_dir)] if "nerf" in stages or "mesh" in stages else []
                if "gaussian" in stages:
                    plan.append(("gaussian", gaussian_file, Path(f"{run_dir}-gaussian")))
                runs = []
                for first, file, folder in plan:
                    cfg = load_config(file, over)
                    cfg.prompt = prompt
                    t0 = time.time()
                    trainer = Trainer(cfg, folder, prior=prior)
                    prior = trainer.prior if not cfg.prior else prior
                    trainer.train(handle_signals=False)
                    runs.append((first, trainer, time.time() - t0))
                if "mesh" in stages:
                    t0 = time.time()
                    mesh_cfg = mesh_stage_config(run_dir, overrides=["export.enabled=false"])
                    mesh_trainer = Trainer(mesh_cfg, RunFolder(run_dir).mesh_stage, prior=prior)
                    mesh_trainer.train(handle_signals=False)
                    runs.append(("mesh", mesh_trainer, time.time() - t0))
                for stage, tr, seconds in runs:
                    if stage not in stages or (method, stage, prompt, seed, steps) in done:
                        continue
                    scores = score_geometry(tr.renderer.eval(), sp.shape)
                    row = {"method": method, "stage": stage, "prompt": prompt, "seed": seed, "steps": steps,
                           **scores, "seconds": round(seconds, 1)}
                    rows.append(row)
                    log(f"{method:5s} {stage:4s} {prompt:22s} seed {seed}: iou {row['iou']:.3f} "
                        f"sil {row['silhouette_iou']:.3f} chamfer {row['chamfer']:.4f} ({row['seconds']:.0f} s)")
                    if json_path:
                        Path(json_path).write_text(json.dumps(rows, indent=1))
    log(format_table(rows))
    return rows


def format_table(rows: list[dict]) -> str:
    """Mean iou / silhouette_iou / chamfer / seconds per (method, stage) and per (method, stage, shape); with both
    stages, the mean gain of the mesh stage over the NeRF it started from, per shape, over paired runs."""
    lines = [f"{'method':6s} {'stage':5s} {'shape':9s} {'iou':>6s} {'sil':>7s} {'chamfer':>8s} {'sec':>6s}"]
    groups = dict.fromkeys((r["method"], r.get("stage", "nerf")) for r in rows)
    for method, stage in groups:
        mr = [r for r in rows if r["method"] == method and r.get("stage", "nerf") == stage]
        for shape, sr in _by_shape(mr):
            lines.append(f"{method:6s} {stage:5s} {shape:9s} {np.mean([r['iou'] for r in sr]):6.3f} "
                         f"{np.mean([r['silhouette_iou'] for r in sr]):7.4f} "
                         f"{np.mean([r['chamfer'] for r in sr]):8.4f} {np.mean([r['seconds'] for r in sr]):6.0f}")
    def run_key(r: dict) -> tuple:
        return r["method"], r["prompt"], r["seed"], r.get("steps")

    nerf = {run_key(r): r for r in rows if r.get("stage", "nerf") == "nerf"}
    pairs = [(r, nerf[run_key(r)]) for r in rows if r.get("stage") == "mesh" and run_key(r) in nerf]
    if pairs:
        lines.append(f"{'method':6s} mesh-nerf {'shape':9s} {'d_iou':>6s} {'d_sil':>7s} {'runs':>4s}")
        for method in dict.fromkeys(m["method"] for m, _ in pairs):
            mp = [(m, n) for m, n in pairs if m["method"] == method]
            for shape, sp in _by_shape(mp, key=lambda p: p[0]):
                d_iou = np.mean([m["iou"] - n["iou"] for m, n in sp])
                d_sil = np.mean([m["silhouette_iou"] - n["silhouette_iou"] for m, n in sp])
                lines.append(f"{method:6s} {'':9s} {shape:9s} {d_iou:+6.3f} {d_sil:+7.4f} {len(sp):4d}")
    return "\n".join(lines)


def _by_shape(items: list, key=lambda r: r) -> list[tuple[str, list]]:
    """(shape, items of that shape) for each shape present, then ("MEAN", all items)."""
    groups = [(shape, [it for it in items if parse_prompt(key(it)["prompt"]).shape == shape]) for shape in SHAPES]
    return [(shape, its) for shape, its in groups if its] + [("MEAN", list(items))]
