"""How well `dream3d edit` changed what it should and kept what it should, on shapes-world runs.

Given a source run (e.g. "a red cube") and its edit (e.g. "a blue cube"), prints:
- color_accuracy: fraction of 16 lambertian renders of the edited scene (8 azimuths x elevations 0 and 40 degrees,
  white background) whose dominant foreground color (shapes.metrics.classify_color) is the target prompt's color;
  the same for the source scene and the source color, as a reference;
- shape_iou: 3D IoU (128^3 grid of cell centres) between the occupancies of the source and the edited scene, each
  thresholded at its own export iso level (the level `dream3d export` meshes);
- iou_vs_truth for both scenes against the true primitive.
Usage: python benchmarks/edit_fidelity.py SOURCE_RUN EDITED_RUN [--grid 128] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


@torch.no_grad()
def export_occupancy(renderer, grid: int) -> torch.Tensor:
    """(grid,grid,grid) bool: density above the run's automatic export level."""
    from dream3d.export.surface import extract_surface
    from dream3d.shapes.primitives import grid_points

    geometry = renderer.geometry
    level = extract_surface(geometry, 128, max_faces=0, smooth_iterations=0).level
    pts = grid_points(grid, geometry.bound).reshape(-1, 3)
    dens = torch.cat([geometry.density(p) for p in pts.split(262144)])
    return (dens > level).reshape(grid, grid, grid)


@torch.no_grad()
def color_accuracy(renderer, color: str, size: int = 64) -> float:
    """Fraction of 16 lambertian views whose dominant foreground color is `color`."""
    from dream3d.cameras import make_cameras
    from dream3d.shapes.metrics import classify_color

    cams = make_cameras(torch.tensor([0.0] * 8 + [40.0] * 8), torch.arange(16) % 8 * 45.0)
    out = renderer.render_chunked(cams, size, size, shading="lambertian", with_normal=False,
                                  bg_color=torch.ones(3))
    names = classify_color(out.rgb.clamp(0, 1))
    return sum(n == color for n in names) / len(names)


def main() -> None:
    from dream3d.run_folder import RunFolder
    from dream3d.shapes.metrics import volume_iou
    from dream3d.shapes.primitives import occupancy
    from dream3d.shapes.prompts import parse_prompt

    ap = argparse.ArgumentParser()
    ap.add_argument("source_run")
    ap.add_argument("edited_run")
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--json")
    a = ap.parse_args()
    src_cfg, src = RunFolder(Path(a.source_run)).load_renderer("cpu")
    edit_cfg, edit = RunFolder(Path(a.edited_run)).load_renderer("cpu")
    src_p, edit_p = parse_prompt(src_cfg.prompt), parse_prompt(edit_cfg.prompt)
    occ_src, occ_edit = export_occupancy(src, a.grid), export_occupancy(edit, a.grid)
    truth = occupancy(src_p.shape, a.grid, src.geometry.bound)
    stats = {"source_prompt": src_cfg.prompt, "target_prompt": edit_cfg.prompt,
             "color_accuracy": color_accuracy(edit, edit_p.color),
             "source_color_accuracy": color_accuracy(src, src_p.color),
             "shape_iou": volume_iou(occ_edit, occ_src),
             "source_iou_vs_truth": volume_iou(occ_src, truth),
             "edited_iou_vs_truth": volume_iou(occ_edit, occupancy(edit_p.shape, a.grid, edit.geometry.bound))}
    text = json.dumps(stats, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()
