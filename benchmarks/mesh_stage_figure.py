"""Figure and numbers for the mesh stage: a NeRF run and its refined mesh run side by side.

Rows: ground truth (shapes world), NeRF stage, mesh stage; columns: views around the object (textureless shading,
which shows the shape alone). Prints, per stage, the shapes-benchmark scores (iou, silhouette_iou, chamfer) and an
edge-sharpness number for cubes: the fraction of the surface area whose normal lies within 10 degrees of a
coordinate axis (1.0 for a perfect cube; rounded edges and bumps lower it).
Usage: python benchmarks/mesh_stage_figure.py NERF_RUN MESH_RUN --out docs/mesh_stage_cube.png [--size 160]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
from PIL import Image


def axis_aligned_fraction(vertices: np.ndarray, faces: np.ndarray, degrees: float = 10.0) -> float:
    """Area fraction of faces whose unit normal is within `degrees` of ±x, ±y or ±z."""
    tri = vertices[faces].astype(np.float64)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(n, axis=-1)
    ok = area > 0
    cos = np.abs(n[ok] / area[ok, None]).max(-1)
    return float(area[ok][cos > math.cos(math.radians(degrees))].sum() / area[ok].sum())


def main() -> None:
    from dream3d.bench_shapes import score_geometry
    from dream3d.cameras import make_cameras
    from dream3d.export.surface import extract_surface
    from dream3d.run_folder import RunFolder
    from dream3d.shapes.prompts import parse_prompt
    from dream3d.shapes.render import render_shapes

    ap = argparse.ArgumentParser()
    ap.add_argument("nerf_run")
    ap.add_argument("mesh_run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=160)
    a = ap.parse_args()
    cfg, nerf = RunFolder(a.nerf_run).load_renderer("cpu")
    _, mesh = RunFolder(a.mesh_run).load_renderer("cpu")
    shape = parse_prompt(cfg.prompt).shape
    cams = make_cameras([30.0, 30.0, 15.0], [35.0, 150.0, -100.0])
    rows = []
    with torch.no_grad():
        gt, _ = render_shapes([shape] * 3, torch.ones(3, 3), cams, a.size)  # white Lambertian = textureless
        rows.append(gt)
        for r in (nerf, mesh):
            rows.append(r.render_chunked(cams, a.size, a.size, shading="textureless").rgb)
    grid = torch.cat([torch.cat(list(row), -1) for row in rows], -2).clamp(0, 1)
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(a.out)
    report = {}
    for stage, r in (("nerf", nerf), ("mesh", mesh)):
        scores = score_geometry(r, shape)
        with torch.no_grad():
            if stage == "nerf":
                s = extract_surface(r.geometry, 256, max_faces=0, smooth_iterations=0)
                v, f = s.vertices, s.faces
            else:
                m = r.geometry.extract_mesh()
                v, f = m.vertices.numpy(), m.faces.numpy()
        scores["axis_aligned_area"] = axis_aligned_fraction(v, f)
        report[stage] = {k: round(float(x), 4) for k, x in scores.items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
