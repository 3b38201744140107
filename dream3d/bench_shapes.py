"""`dream3d bench shapes`: generation quality against the shapes world's ground truth.

Per (method, prompt, seed) a full generation runs, then:
- iou: 3D IoU (on a 128^3 grid of cell centres) between the occupancy that export extracts — the density above
  the export's automatic iso level — and the true primitive;
- silhouette_iou: mean IoU of rendered opacity > 0.5 and the true silhouette over 16 views (8 azimuths x
  elevations 0 and 40 degrees); for the mesh stage, of the pixel centres the mesh covers (its exact silhouette;
  the rasterizer's antialiasing, a device for edge gradients, can dim a covered corner pixel below 0.5);
- chamfer: symmetric Chamfer distance (world units) between the exported surface's vertices and the true surface;
- janus (shapes with a distinct back, the wedge): whether the result fits the true shape turned 180 degrees about
  the vertical axis better than the true shape, or is its own front/back mirror image well beyond the truth
  (`dream3d.shapes.metrics.janus_scores`), with iou_turned and mirror_iou; None for the other shapes;
- seconds: wall time of the generation (of this invocation's part when it resumed from a checkpoint).

Resuming: every finished row is appended to `rows.jsonl` in the output folder; a rerun of the same command skips
the rows found there (same method, stage, prompt, seed, steps, config file and overrides), and a run cut off
mid-training resumes from its run folder's last checkpoint (`resumed_from` in its row: the step it resumed at).

`stages` (`--stages nerf,mesh`): after the NeRF run, the mesh stage (`dream3d refine` with configs/mesh.yaml)
runs on it and is scored the same way, with the DMTet mesh itself as the surface (occupancy by ray parity,
Chamfer on area-uniform surface samples); every row carries its `stage` and the mesh row's seconds are the mesh
stage's own (initialisation included). `gaussian` trains configs/gaussian.yaml (or `--config` when it is the
only stage) on the same prompt and seed and scores the mesh its export extracts (the density field's surface at
the automatic level, floaters removed), likewise.
"""

from __future__ import annotations

import hashlib
import json
import os
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
from dream3d.shapes.metrics import chamfer_to_shape, janus_scores, volume_iou
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
    """iou / silhouette_iou / chamfer / janus (+ iou_turned, mirror_iou) of a trained renderer's geometry against
    the true `shape`."""
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
    true_occ = occupancy(shape, grid_resolution, geometry.bound)
    iou = volume_iou(occ, true_occ)
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
    return {"iou": iou, "silhouette_iou": sil, "chamfer": chamfer, "level": level, **janus_scores(occ, true_occ)}


ROWS_FILE = "rows.jsonl"


def read_rows(path: Path) -> list[dict]:
    """The rows of a rows.jsonl file (none if it does not exist). A last line cut short by an interruption is
    dropped, and the file rewritten without it, so that appending continues on a line of its own."""
    if not path.is_file():
        return []
    text = path.read_text()
    rows, bad = [], 0
    for line in filter(str.strip, text.splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad or (text and not text.endswith("\n")):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
    return rows


def append_row(path: Path, row: dict) -> None:
    """Append one row to a rows.jsonl file and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def row_key(row: dict) -> tuple:
    """What identifies a benchmark row: method, stage, prompt, seed, steps, config file and config overrides."""
    return (row["method"], row.get("stage", "nerf"), row["prompt"], row["seed"], row.get("steps"),
            row.get("config"), tuple(row.get("overrides", ())))


def run_folder_name(method: str, prompt: str, seed: int, overrides: list[str] = (), config: str | None = None) -> str:
    """`<method>-<color>-<shape>-s<seed>`, plus `-o<hash>` of the config file and overrides when there are any (so
    that runs with other settings never resume each other's checkpoints)."""
    sp = parse_prompt(prompt)
    name = f"{method}-{sp.color}-{sp.shape}-s{seed}"
    if overrides or config:
        name += "-o" + hashlib.sha1("\n".join([config or "", *overrides]).encode()).hexdigest()[:8]
    return name


class ResumedSteps(dict):
    """A trainer's events callback that records, per stage, the step it resumed from (its "start" event)."""

    def __call__(self, event) -> None:
        if event.kind == "start" and event.resumed:
            self[event.stage] = event.step


def bench_shapes(methods: list[str], prompts_file: str | None = None, seeds: list[int] = (0, 1),
                 steps: int | None = None, json_path: str | None = None, config: str | None = None,
                 out_root: str = "outputs/bench", overrides: list[str] = (), log=print,
                 stages: tuple[str, ...] | list[str] = ("nerf",)) -> list[dict]:
    """Run every (method, prompt, seed) through the stages; print a per-row line and a mean table; return the rows.

    Rows go to `<out_root>/rows.jsonl` as they finish; rows already there (same `row_key`) are kept and not
    rerun, so an interrupted benchmark continues where it stopped. Returns (and tabulates) this command's rows,
    found or new; with `json_path` they are also written there as one JSON list after every row.
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
    for p in prompts:
        parse_prompt(p)  # shapes-world prompts only: the truth must be known
    overrides = list(overrides)
    rows_path = Path(out_root) / ROWS_FILE
    rows = read_rows(rows_path)
    if rows:
        log(f"continuing {rows_path} ({len(rows)} rows)")
    done = {row_key(r) for r in rows}
    mine: list[dict] = []
    prior = None
    for method in methods:
        cfg_file = config_file(config) if config else recipe_path(method)
        only_gaussian = "nerf" not in stages and "mesh" not in stages  # --config is then the Gaussian recipe
        gaussian_file = config_file(config) if config and only_gaussian else recipe_path("gaussian")
        for prompt in prompts:
            for seed in seeds:
                base = {"method": method, "prompt": prompt, "seed": seed, "steps": steps, "config": config,
                        "overrides": overrides}
                keys = [row_key({**base, "stage": st}) for st in stages]
                mine += [r for r in rows if row_key(r) in keys]
                if all(k in done for k in keys):
                    continue
                over = [f"guidance.method={method}", f"seed={seed}", "export.enabled=false", *overrides]
                if steps is not None:
                    over.append(f"steps={steps}")
                run_dir = Path(out_root) / run_folder_name(method, prompt, seed, overrides, config)
                plan = [("nerf", cfg_file, run_dir)] if "nerf" in stages or "mesh" in stages else []
                if "gaussian" in stages:
                    plan.append(("gaussian", gaussian_file, Path(f"{run_dir}-gaussian")))
                started = ResumedSteps()
                runs = []
                for first, file, folder in plan:
                    cfg = load_config(file, over)
                    cfg.prompt = prompt
                    t0 = time.time()
                    trainer = Trainer(cfg, folder, prior=prior, events=started)
                    prior = trainer.prior if not cfg.prior else prior
                    trainer.train(handle_signals=False)
                    runs.append((first, trainer, time.time() - t0))
                if "mesh" in stages:
                    t0 = time.time()
                    mesh_cfg = mesh_stage_config(run_dir, overrides=["export.enabled=false"])
                    mesh_trainer = Trainer(mesh_cfg, RunFolder(run_dir).mesh_stage, prior=prior, events=started)
                    mesh_trainer.train(handle_signals=False)
                    runs.append(("mesh", mesh_trainer, time.time() - t0))
                for stage, tr, seconds in runs:
                    row = {**base, "stage": stage}
                    if stage not in stages or row_key(row) in done:
                        continue
                    row.update(score_geometry(tr.renderer.eval(), parse_prompt(prompt).shape))
                    row["seconds"] = round(seconds, 1)
                    if stage in started:
                        row["resumed_from"] = started[stage]
                    mine.append(row)
                    done.add(row_key(row))
                    append_row(rows_path, row)
                    janus = "" if row["janus"] is None else f" janus {'yes' if row['janus'] else 'no'}"
                    log(f"{method:5s} {stage:4s} {prompt:22s} seed {seed}: iou {row['iou']:.3f} "
                        f"sil {row['silhouette_iou']:.3f} chamfer {row['chamfer']:.4f}{janus} "
                        f"({row['seconds']:.0f} s)")
                    if json_path:
                        Path(json_path).write_text(json.dumps(mine, indent=1))
    log(format_table(mine))
    return mine


def row_labels(rows: list[dict]) -> list[str]:
    """Each row's method; followed by the row's config overrides where one method ran with several sets of them."""
    sets: dict[str, set] = {}
    for r in rows:
        sets.setdefault(r["method"], set()).add(tuple(r.get("overrides", ())))
    return [" ".join([r["method"], *r.get("overrides", ())]) if len(sets[r["method"]]) > 1 else r["method"]
            for r in rows]


def janus_rate(rows: list[dict]) -> str:
    """"k/n": k Janus results among the n rows whose shape has a distinct back; "-" when there are none."""
    judged = [r["janus"] for r in rows if r.get("janus") is not None]
    return f"{sum(judged)}/{len(judged)}" if judged else "-"


def format_table(rows: list[dict]) -> str:
    """Mean iou / silhouette_iou / chamfer / seconds and the Janus rate per (method, stage) and per (method, stage,
    shape) (method: `row_labels`); with both stages, the mean gain of the mesh stage over the NeRF it started from,
    per shape, over paired runs."""
    labelled = list(zip(row_labels(rows), rows))
    width = max([6] + [len(label) for label, _ in labelled])
    lines = [f"{'method':{width}s} {'stage':5s} {'shape':9s} {'iou':>6s} {'sil':>7s} {'chamfer':>8s} {'sec':>6s} "
             f"{'janus':>6s}"]
    for label, stage in dict.fromkeys((label, r.get("stage", "nerf")) for label, r in labelled):
        mr = [r for lab, r in labelled if lab == label and r.get("stage", "nerf") == stage]
        for shape, sr in _by_shape(mr):
            lines.append(f"{label:{width}s} {stage:5s} {shape:9s} {np.mean([r['iou'] for r in sr]):6.3f} "
                         f"{np.mean([r['silhouette_iou'] for r in sr]):7.4f} "
                         f"{np.mean([r['chamfer'] for r in sr]):8.4f} {np.mean([r['seconds'] for r in sr]):6.0f} "
                         f"{janus_rate(sr):>6s}")
    nerf = {(label, r["prompt"], r["seed"], r.get("steps")): r for label, r in labelled
            if r.get("stage", "nerf") == "nerf"}
    pairs = [(label, r, nerf[key]) for label, r in labelled
             if r.get("stage") == "mesh" and (key := (label, r["prompt"], r["seed"], r.get("steps"))) in nerf]
    if pairs:
        lines.append(f"{'method':{width}s} mesh-nerf {'shape':9s} {'d_iou':>6s} {'d_sil':>7s} {'runs':>4s}")
        for label in dict.fromkeys(lab for lab, _, _ in pairs):
            mp = [(m, n) for lab, m, n in pairs if lab == label]
            for shape, sp in _by_shape(mp, key=lambda p: p[0]):
                d_iou = np.mean([m["iou"] - n["iou"] for m, n in sp])
                d_sil = np.mean([m["silhouette_iou"] - n["silhouette_iou"] for m, n in sp])
                lines.append(f"{label:{width}s} {'':9s} {shape:9s} {d_iou:+6.3f} {d_sil:+7.4f} {len(sp):4d}")
    return "\n".join(lines)


def _by_shape(items: list, key=lambda r: r) -> list[tuple[str, list]]:
    """(shape, items of that shape) for each shape present, then ("MEAN", all items)."""
    groups = [(shape, [it for it in items if parse_prompt(key(it)["prompt"]).shape == shape]) for shape in SHAPES]
    return [(shape, its) for shape, its in groups if its] + [("MEAN", list(items))]
