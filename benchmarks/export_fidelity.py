"""Fidelity and speed of `dream3d export` on a trained shapes-world run.

Prints: export time; IoU of the exported mesh's occupancy with the NeRF's own occupancy (density > export level);
IoU of mesh and NeRF occupancy with the true primitive; mean albedo error between renders of the textured GLB
(ray cast with trimesh, texture sampled at the hit's UV) and the NeRF's albedo renders on foreground pixels.
Usage: python benchmarks/export_fidelity.py RUN_DIR [--grid 128] [--views 4] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from test_export import parity_occupancy  # the independent inside/outside voxelizer of the export tests

    from dream3d.cameras import camera_rays, orbit_cameras
    from dream3d.pipeline import export_run
    from dream3d.run_folder import RunFolder
    from dream3d.shapes.metrics import volume_iou
    from dream3d.shapes.primitives import grid_points, occupancy
    from dream3d.shapes.prompts import parse_prompt

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    run = Path(a.run_dir)
    cfg, renderer = RunFolder(run).load_renderer()
    shape = parse_prompt(cfg.prompt).shape
    t0 = time.time()
    result = export_run(run, turntable=False)
    export_s = time.time() - t0
    level = result["stats"]["level"]

    glb = trimesh.load(run / "export" / "model.glb", force="mesh")
    n = a.grid
    with torch.no_grad():
        dens = torch.cat([renderer.geometry.density(p) for p in grid_points(n).reshape(-1, 3).split(262144)])
    nerf_occ = (dens > level).reshape(n, n, n).numpy()
    mesh_occ = parity_occupancy(np.asarray(glb.vertices), np.asarray(glb.faces), n)
    truth = occupancy(shape, n).numpy()
    t_ = torch.from_numpy
    stats = {"export_seconds": round(export_s, 1), "faces": int(len(glb.faces)),
             "iou_mesh_vs_nerf": volume_iou(t_(mesh_occ), t_(nerf_occ)),
             "iou_mesh_vs_truth": volume_iou(t_(mesh_occ), t_(truth)),
             "iou_nerf_vs_truth": volume_iou(t_(nerf_occ), t_(truth))}

    # renders: NeRF albedo vs the textured mesh (ray cast, texture looked up at the hit's UV)
    cams = orbit_cameras(a.views, elevation_deg=25.0, start_azimuth_deg=20.0)
    with torch.no_grad():
        nerf = renderer.render_chunked(cams, a.size, a.size, shading="albedo", with_normal=False)
    origins, dirs = camera_rays(cams, a.size, a.size)
    o, d = origins.reshape(-1, 3).numpy(), dirs.reshape(-1, 3).numpy()
    tri, ray, loc = glb.ray.intersects_id(o, d, multiple_hits=False, return_locations=True)
    bary = trimesh.triangles.points_to_barycentric(glb.triangles[tri], loc)
    uv = np.einsum("nk,nkc->nc", bary, glb.visual.uv[glb.faces[tri]])
    colors = trimesh.visual.color.uv_to_color(uv, glb.visual.material.baseColorTexture)[:, :3] / 255.0
    mesh_rgb = np.ones((o.shape[0], 3))
    mesh_rgb[ray] = colors
    nerf_rgb = nerf.rgb.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    hit = np.zeros(o.shape[0], bool)
    hit[ray] = True
    fg = hit & (nerf.opacity.reshape(-1).numpy() > 0.5)
    stats["albedo_mean_abs_error"] = float(np.abs(mesh_rgb[fg] - nerf_rgb[fg]).mean())
    stats["silhouette_iou_mesh_vs_nerf"] = float(fg.sum() / (hit | (nerf.opacity.reshape(-1).numpy() > 0.5)).sum())
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
