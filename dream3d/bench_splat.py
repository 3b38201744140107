"""Benchmark of the Gaussian splatting backends, all measured in one run against the torch reference.

`python -m dream3d.bench_splat --gaussians N --size S --views C [--rounds R] [--threads T] [--json FILE]`

The scene: N Gaussians uniform in a ball of radius 0.6 around the origin, standard deviations log-normal around
0.02 world units, opacities uniform in [0.05, 0.95], seen from C cameras on an orbit (elevation 20, distance 3,
40 degree field of view) at S x S pixels. Forward is timed under `no_grad`; forward+backward takes the gradient
of a fixed random weighting of rgb, alpha and depth w.r.t. every Gaussian parameter (a training step's rendering
cost). The backends run one after another within each round, rounds repeated; each figure is the median over
rounds, so a load change on a shared machine hits all backends alike. Besides wall time, the process's CPU time
per call is reported (all threads together): on a shared machine it is what a call costs, whatever else runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from dream3d.cameras import orbit_cameras
from dream3d.errors import Dream3DError
from dream3d.fileio import write_json_atomic
from dream3d.render.splat import BACKENDS, cameras_to_splat, cpp_backend, gsplat_backend, rasterize_gaussians
from dream3d.system import device_name, device_timer


def available_backends(device: torch.device) -> list[str]:
    """Backends that can run on `device`, the torch reference first."""
    names = ["torch"]
    if device.type == "cpu" and cpp_backend.available():
        names.append("cpp")
    if gsplat_backend.unavailable(device) is None:
        names.append("gsplat")
    return names


def bench_scene(gaussians: int, size: int, views: int, device: torch.device, seed: int = 0) -> dict:
    """The benchmark's Gaussians (leaf tensors requiring grad), cameras and loss weights."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(gaussians, 3, generator=gen)
    radius = 0.6 * torch.rand(gaussians, 1, generator=gen) ** (1 / 3)
    params = {
        "means": direction / direction.norm(dim=-1, keepdim=True) * radius,
        "quats": torch.randn(gaussians, 4, generator=gen),
        "scales": torch.exp(torch.randn(gaussians, 3, generator=gen) * 0.3 + torch.log(torch.tensor(0.02))),
        "opacities": 0.05 + 0.9 * torch.rand(gaussians, generator=gen),
        "colors": torch.rand(gaussians, 3, generator=gen),
    }
    viewmats, ks = cameras_to_splat(orbit_cameras(views), size, size)
    weights = [torch.randn(views, size, size, d, generator=gen).to(device) for d in (3, 1, 1)]
    return {"params": {k: v.to(device).requires_grad_() for k, v in params.items()},
            "viewmats": viewmats.to(device), "Ks": ks.to(device), "size": size, "weights": weights}


def _render(scene: dict, backend: str):
    s = scene["size"]
    return rasterize_gaussians(*scene["params"].values(), scene["viewmats"], scene["Ks"], s, s, backend=backend)


def _step_fns(scene: dict, backend: str):
    def fwd():
        with torch.no_grad():
            return _render(scene, backend)

    def fwd_bwd():
        out = _render(scene, backend)
        loss = sum((o * w).sum() for o, w in zip((out.rgb, out.alpha, out.depth), scene["weights"]))
        return torch.autograd.grad(loss, list(scene["params"].values()))

    return fwd, fwd_bwd


def bench_splat(gaussians: int = 20_000, size: int = 64, views: int = 4, rounds: int = 3,
                threads: int | None = None, json_path: str | None = None, device: str = "auto",
                backends: list[str] | None = None) -> dict:
    """Time forward and forward+backward of every available backend (or `backends`); print a table; optionally
    write JSON. Returns {"backends": {name: {"fwd_s", "fwd_bwd_s", "fwd_cpu_s", "fwd_bwd_cpu_s"}}, "gaussians",
    "size", "views", "rounds", "device"} (median wall and CPU seconds per call)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    names = backends or available_backends(dev)
    timer = device_timer(dev)
    warm = bench_scene(64, 16, 1, dev)
    for name in names:  # builds, caches and first-call costs stay out of the figures
        for fn in _step_fns(warm, name):
            fn()
    scene = bench_scene(gaussians, size, views, dev)
    fns = {name: _step_fns(scene, name) for name in names}
    keys = ("fwd_s", "fwd_bwd_s", "fwd_cpu_s", "fwd_bwd_cpu_s")
    times: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in names}
    for _ in range(rounds):
        for name, (fwd, fwd_bwd) in fns.items():
            for key, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                cpu = time.process_time()
                times[name][f"{key}_s"].append(timer(fn))
                times[name][f"{key}_cpu_s"].append(time.process_time() - cpu)
    results = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    report = {"backends": results, "gaussians": gaussians, "size": size, "views": views, "rounds": rounds,
              "device": device_name(dev)}
    print(format_table(report))
    if json_path:
        write_json_atomic(Path(json_path), report)
    return report


def format_table(report: dict) -> str:
    """The report as a text table: median wall and CPU seconds per call, and the speed-ups over the torch
    reference."""
    ref = report["backends"].get("torch")
    s = report["size"]
    cols = [("fwd_s", "fwd s"), ("fwd_bwd_s", "fwd+bwd s"), ("fwd_cpu_s", "fwd cpu s"),
            ("fwd_bwd_cpu_s", "f+b cpu s")]
    lines = [f"splatting: {report['gaussians']} Gaussians, {report['views']} views of {s}x{s}, "
             f"median of {report['rounds']} rounds, device {report['device']}",
             f"{'backend':<8}" + "".join(f" {title:>10} {'x torch':>8}" for _, title in cols)]
    for name, r in report["backends"].items():
        cells = [f" {r[key]:>10.4f} {ref[key] / r[key] if ref and r[key] > 0 else float('nan'):>8.1f}"
                 for key, _ in cols]
        lines.append(f"{name:<8}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    bench_splat(args.gaussians, args.size, args.views, args.rounds, args.threads, args.json, args.device,
                parse_backends(args.backends))


def parse_backends(text: str | None) -> list[str] | None:
    """The backends of a --backends value (None: all available); an unknown name is a one-line Dream3DError."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS or n == "auto"]
    if unknown:
        raise Dream3DError(f"unknown splatting backend(s) {', '.join(unknown)}; choose from cpp, gsplat, torch")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `dream3d bench splat` (and of this module's own command line)."""
    parser.add_argument("--gaussians", type=int, default=20_000, help="Gaussians in the scene")
    parser.add_argument("--size", type=int, default=64, help="image width and height in pixels")
    parser.add_argument("--views", type=int, default=4, help="cameras rendered per call")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (every backend once per round)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the timings to this JSON file (default: none)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu or cuda")
    parser.add_argument("--backends", default=None, help="comma-separated subset of the available backends "
                                                         "(default: all; ratios need torch among them)")


if __name__ == "__main__":
    main()
