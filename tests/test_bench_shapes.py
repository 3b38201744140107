"""The shapes benchmark's scoring: a field that IS the true shape scores ~1; a wrong shape scores low."""

import pytest

from dream3d.bench_shapes import default_prompts, format_table, score_geometry
from dream3d.geometry.analytic import SDFDensityField
from dream3d.render.volume import VolumeRenderer


@pytest.mark.parametrize("shape", ["cube", "torus"])
def test_true_shape_scores_high(shape):
    renderer = VolumeRenderer(SDFDensityField(shape, density_max=1000.0, sharpness=0.002), num_samples_per_ray=128).eval()
    s = score_geometry(renderer, shape, grid_resolution=64, export_resolution=64)
    assert s["iou"] > 0.9 and s["silhouette_iou"] > 0.9 and s["chamfer"] < 0.03


def test_wrong_shape_scores_low():
    renderer = VolumeRenderer(SDFDensityField("sphere", density_max=1000.0, sharpness=0.002), num_samples_per_ray=128).eval()
    s = score_geometry(renderer, "torus", grid_resolution=64, export_resolution=64)
    assert s["iou"] < 0.5 and s["chamfer"] > 0.05


def test_default_prompts_and_table():
    prompts = default_prompts()
    assert len(prompts) == 12 and "a red cube" in prompts
    rows = [{"method": "sds", "prompt": "a red cube", "seed": 0, "iou": 0.8, "silhouette_iou": 0.9,
             "chamfer": 0.02, "seconds": 10.0}]
    table = format_table(rows)
    assert "cube" in table and "MEAN" in table and "0.800" in table


def test_table_reports_the_mesh_stage_gain_over_its_own_nerf_run():
    def row(stage, prompt, seed, iou, sil):
        return {"method": "sds", "stage": stage, "prompt": prompt, "seed": seed, "iou": iou,
                "silhouette_iou": sil, "chamfer": 0.02, "seconds": 1.0}

    rows = [row("nerf", "a red cone", 0, 0.80, 0.90), row("mesh", "a red cone", 0, 0.85, 0.89),
            row("nerf", "a blue cone", 1, 0.70, 0.80), row("mesh", "a blue cone", 1, 0.72, 0.84),
            row("nerf", "a red cube", 0, 0.60, 0.70)]  # no mesh run: not paired
    gains = table_lines_after(format_table(rows), "mesh-nerf")
    # cone: d_iou = mean(0.05, 0.02), d_sil = mean(-0.01, 0.04); the cube has no pair
    assert gains[0].split()[1:] == ["cone", "+0.035", "+0.0150", "2"]
    assert gains[1].split()[1:] == ["MEAN", "+0.035", "+0.0150", "2"] and len(gains) == 2


def table_lines_after(table: str, header_word: str) -> list[str]:
    lines = table.splitlines()
    start = next(i for i, ln in enumerate(lines) if header_word in ln)
    return lines[start + 1:]


def test_surface_samples_lie_on_every_surface():
    import torch

    from dream3d.shapes import SHAPES, sdf
    from dream3d.shapes.metrics import surface_samples

    for shape in SHAPES:
        pts = surface_samples(shape, 2000, torch.Generator().manual_seed(0))
        assert pts.shape[0] == 2000 and torch.isfinite(pts).all()
        assert sdf(shape, pts).abs().max() < 2e-3, shape


def test_bench_continues_from_its_json(tmp_path, monkeypatch):
    """Rows already in the JSON file are kept and not rerun; only the missing ones would be trained."""
    import json

    import dream3d.trainer
    from dream3d.bench_shapes import bench_shapes

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n# a comment\na blue torus\n")
    done = [{"method": "sds", "prompt": p, "seed": 0, "steps": 50, "iou": 0.8, "silhouette_iou": 0.9,
             "chamfer": 0.02, "seconds": 1.0} for p in ("a red cube", "a blue torus")]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(done))
    trained = []

    class NoTraining:
        def __init__(self, cfg, *args, **kwargs):
            trained.append(cfg.prompt)
            raise RuntimeError("stop here")

    monkeypatch.setattr(dream3d.trainer, "Trainer", NoTraining)
    rows = bench_shapes(["sds"], str(prompts), seeds=[0], steps=50, json_path=str(path), log=lambda m: None)
    assert rows == done and trained == []
    with pytest.raises(RuntimeError, match="stop here"):  # another step count is a new row: it would train
        bench_shapes(["sds"], str(prompts), seeds=[0], steps=60, json_path=str(path), log=lambda m: None)
    assert trained == ["a red cube"]
