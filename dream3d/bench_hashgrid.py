"""Benchmark of the hash-grid encoding backends, all measured in one run against the torch reference.

`python -m dream3d.bench_hashgrid --points N --levels L --json FILE [--device cpu|cuda|auto]`

Forward is timed under `no_grad` (inference); forward+backward evaluates with autograd and takes the gradient
of `<out, g>` w.r.t. the table (a training step's encoding cost). Each figure is the median of several repeats
after a warm-up, with the same inputs and table for every backend.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from . import native
from .encoding import HashGridEncoding
from .system import device_name, device_timer
from .encoding.backends import tcnn_available
from .fileio import write_json_atomic


def _median_time(fn: Callable[[], object], timer, budget_s: float = 4.0, max_repeats: int = 10) -> float:
    """Median over repeats after one warm-up; at least 3 repeats, fewer than `max_repeats` if slow."""
    first = timer(fn)  # warm-up (and build/caches)
    repeats = max(3, min(max_repeats, int(budget_s / max(first, 1e-6))))
    return statistics.median(timer(fn) for _ in range(repeats))


def available_backends(device: torch.device) -> list[str]:
    """Backends that can run on `device`, the torch reference first."""
    names = ["torch"]
    if device.type == "cpu" and native.load("hashgrid", "cpu") is not None:
        names.append("cpp")
    if device.type == "cuda":
        if native.load("hashgrid", "cuda") is not None:
            names.append("cuda")
        if tcnn_available():
            names.append("tcnn")
    return names


def bench_hashgrid(points: int = 2**18, levels: int = 16, json_path: str | None = None, device: str = "auto") -> dict:
    """Time forward and forward+backward of every available backend; print a table; optionally write JSON.

    Returns {"backends": {name: {"fwd_s", "fwd_bwd_s"}}, "points", "levels", "device"} (seconds per call).
    """
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(points, 3, generator=gen).to(dev)
    reference = HashGridEncoding(n_levels=levels, backend="torch").to(dev)
    grad_out = torch.randn(points, reference.n_output_dims, generator=gen).to(dev)
    timer = device_timer(dev)
    results: dict[str, dict[str, float]] = {}
    for name in available_backends(dev):
        enc = HashGridEncoding(n_levels=levels, backend=name).to(dev)
        enc.load_state_dict(reference.state_dict())

        def fwd() -> torch.Tensor:
            with torch.no_grad():
                return enc(x)

        def fwd_bwd() -> torch.Tensor:
            return torch.autograd.grad(enc(x), enc.params, grad_out)[0]

        results[name] = {"fwd_s": _median_time(fwd, timer), "fwd_bwd_s": _median_time(fwd_bwd, timer)}
        del enc
    report = {"backends": results, "points": points, "levels": levels, "device": device_name(dev)}
    print(format_table(report))
    if json_path:
        write_json_atomic(Path(json_path), report)
    return report


def format_table(report: dict) -> str:
    """The report as a text table: seconds, points/s and speed-up over the torch reference."""
    n = report["points"]
    ref = report["backends"].get("torch")
    lines = [f"hash grid: {n} points, {report['levels']} levels, F=2, T=19, device {report['device']}",
             f"{'backend':<8} {'fwd s':>10} {'fwd pts/s':>12} {'x torch':>8} {'fwd+bwd s':>10} "
             f"{'f+b pts/s':>12} {'x torch':>8}"]
    for name, r in report["backends"].items():
        f, fb = r["fwd_s"], r["fwd_bwd_s"]
        rf = ref["fwd_s"] / f if ref else float("nan")
        rfb = ref["fwd_bwd_s"] / fb if ref else float("nan")
        lines.append(f"{name:<8} {f:>10.4f} {n / f:>12.3e} {rf:>8.1f} {fb:>10.4f} {n / fb:>12.3e} {rfb:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2**18)
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    bench_hashgrid(args.points, args.levels, args.json_path, args.device)


if __name__ == "__main__":
    main()
