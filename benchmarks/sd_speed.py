"""Seconds per step and peak memory of SDS and VSD with full-size priors (SD 2.1-base, IF-I-M; random weights).

Speed and memory do not depend on the weights, so no checkpoint is downloaded: the folders are built from the
published configs by `tests/tiny_models.py` (`save_sd21_base_random`: UNet 866M, VAE, 23-layer 1024-d CLIP text
encoder; `save_if_i_m_random`: pixel UNet 372M, 1-layer T5 of width 4096), saved in fp16 and loaded with
`dream3d.priors.load_prior` (fp16 UNet/text encoder on CUDA, fp32 on the CPU; the VAE in fp32). Each case is a
recipe (`sd-sds`, `sd-vsd`, `if-sds`: the shipped one in configs/, else its settings as overrides) at 64x64
renders, one view per step, export off, stepped by `dream3d.trainer.Trainer`: `--warmup` untimed steps, then
`--steps` timed ones. Peak memory: RSS on the CPU (reset per case on Linux), torch.cuda.max_memory_allocated on
CUDA; both include the loaded prior.

Usage: python benchmarks/sd_speed.py [--device auto|cpu|cuda] [--cases sd-sds,sd-vsd,if-sds] [--steps N]
       [--warmup N] [--prior-dir DIR] [--json FILE]
(defaults: CUDA 30 timed steps after 5, CPU 2 after 1; --prior-dir keeps the built folders there and reuses them.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's dream3d; the folder builders of its tests

from tiny_models import (QUIET_RUN, full_size_config, peak_rss_gib, release_memory,  # noqa: E402
                         reset_peak_rss, save_if_i_m_random, save_sd21_base_random)

CASES = ("sd-sds", "sd-vsd", "if-sds")  # in this order: VSD attaches its LoRA to the SD UNet it shares with sd-sds
FOLDERS = {"sd": ("sd21-base", save_sd21_base_random), "if": ("if-i-m", save_if_i_m_random)}


def prior_folder(root: Path, kind: str, log=print) -> Path:
    """The full-size folder of `kind` ("sd" or "if") under root, built unless it is already there."""
    name, build = FOLDERS[kind]
    folder = root / name
    if not (folder / "model_index.json").is_file():
        t0 = time.perf_counter()
        build(folder)
        log(f"built {name} in {time.perf_counter() - t0:.1f} s -> {folder}")
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_case(recipe: str, prior, folder: Path, device: torch.device, steps: int, warmup: int,
                 run_dir: Path) -> dict:
    """Time `steps` training steps of `recipe` after `warmup` ones; returns seconds per step, it/s, peak memory."""
    from dream3d.trainer import Trainer

    cfg, source = full_size_config(recipe, folder, warmup + steps, device=device.type, extra=QUIET_RUN)
    release_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    exact = device.type == "cuda" or reset_peak_rss()
    trainer = Trainer(cfg, run_dir, prior=prior)
    for _ in range(warmup):
        trainer.train_step()
        trainer.step += 1
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
        trainer.step += 1
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**30, "cuda max_memory_allocated"
    else:
        peak, kind = peak_rss_gib(), "RSS" if exact else "RSS (process peak)"
    return {"recipe": recipe, "source": source, "device": str(device), "prior_dtype": str(prior.dtype),
            "renderer": trainer.renderer.resolved_backend(trainer.device),
            "encoding": trainer.renderer.geometry.encoding.backend_for(trainer.device),
            "render": f"{cfg.render.height}x{cfg.render.width}x{cfg.render.batch_size}",
            "steps": steps, "warmup": warmup, "s_per_step": dt, "it_per_s": 1.0 / dt,
            "peak_gib": peak, "peak_kind": kind}


def run(cases: list[str], device: torch.device, steps: int, warmup: int, root: Path, log=print) -> dict:
    """Every case in `cases`, the priors built (or found) under `root` and loaded once per kind; the report dict:
    {"device", "torch", "cases": {recipe: measure_case's dict}}."""
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="dream3d-sd-speed-runs-") as runs:
        for kind in FOLDERS:
            mine = [c for c in CASES if c in cases and c.startswith(kind)]
            if mine:
                report["cases"].update(_run_kind(kind, mine, device, steps, warmup, root, Path(runs), log))
    return report


def _run_kind(kind: str, recipes: list[str], device: torch.device, steps: int, warmup: int, root: Path, runs: Path,
              log) -> dict:
    """The cases of one prior kind on one loaded prior."""
    from dream3d.priors import load_prior

    folder = prior_folder(root, kind, log)
    t0 = time.perf_counter()
    prior = load_prior(folder, device=device)
    log(f"loaded {folder.name} ({prior.dtype}) in {time.perf_counter() - t0:.1f} s")
    out = {}
    for recipe in recipes:
        r = out[recipe] = measure_case(recipe, prior, folder, device, steps, warmup, runs / recipe)
        log(f"{recipe}: {r['s_per_step']:.3f} s/step ({r['it_per_s']:.2f} it/s), peak {r['peak_kind']} "
            f"{r['peak_gib']:.2f} GiB  [{r['source']}; {r['render']} renders; prior {r['prior_dtype']}; "
            f"render {r['renderer']}, hash grid {r['encoding']}; {steps} steps after {warmup}]")
    del prior
    release_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def markdown(report: dict) -> str:
    """The cases as a markdown table."""
    lines = [f"device: {report['device']}, torch {report['torch']}", "",
             "| case | s/step | it/s | peak memory (GiB) | prior dtype | settings |", "|---|---|---|---|---|---|"]
    for name, r in report["cases"].items():
        lines.append(f"| {name} | {r['s_per_step']:.3f} | {r['it_per_s']:.2f} | {r['peak_gib']:.2f} "
                     f"({r['peak_kind']}) | {r['prior_dtype']} | {r['source']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case (CUDA 30, CPU 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (CUDA 5, CPU 1)")
    ap.add_argument("--prior-dir", default=None, help="build the folders here and keep them (reused when present)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    a = ap.parse_args(argv)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        print(f"sd_speed: unknown case {unknown[0] if unknown else '(none)'!r}; the cases are {', '.join(CASES)}",
              file=sys.stderr)
        return 2
    if a.device == "cuda" and not torch.cuda.is_available():
        print("sd_speed: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    device = torch.device("cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    steps = a.steps if a.steps is not None else (30 if device.type == "cuda" else 2)
    warmup = a.warmup if a.warmup is not None else (5 if device.type == "cuda" else 1)
    if steps < 1 or warmup < 0:
        print("sd_speed: --steps must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if a.prior_dir:
        Path(a.prior_dir).mkdir(parents=True, exist_ok=True)
        report = run(cases, device, steps, warmup, Path(a.prior_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="dream3d-sd-speed-") as tmp:
            report = run(cases, device, steps, warmup, Path(tmp))
    print(markdown(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
