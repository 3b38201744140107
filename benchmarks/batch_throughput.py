"""Throughput of `dream3d batch` for the same jobs with 1 worker, 2 workers and a local Ray (2 CPUs).

Each mode runs the real command (`python -m dream3d.cli batch ...`) into a fresh batch folder, so the figures
include process start-up, prior loading, export and (for Ray) starting the local cluster. Prints wall time,
jobs/min and the ratio to 1 worker; per-job times come from each manifest. A 1-step warm-up generation first
builds/loads the C++ hash-grid kernel so that no mode pays for compiling it.

Usage: python benchmarks/batch_throughput.py [--steps 60] [--jobs 4] [--modes w1,w2,ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a yellow torus", "a purple wedge", "an orange cylinder"]
# the CPU default config, with a lighter export so that training dominates
SETTINGS = ["checkpoint_every=20", "preview_every=1000", "export.resolution=128", "export.texture_size=256",
            "export.turntable_frames=12", "export.turntable_resolution=64"]
MODES = {"w1": ("1 worker", ["--workers", "1"]), "w2": ("2 workers", ["--workers", "2"]),
         "ray": ("local Ray, 2 CPUs", ["--ray", "--workers", "2"])}


def run_mode(prompts: Path, out: Path, args: list[str], steps: int) -> dict:
    cmd = [sys.executable, "-m", "dream3d.cli", "batch", str(prompts), "--out", str(out), *args,
           f"steps={steps}", *SETTINGS]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    jobs = json.loads((out / "batch.json").read_text())["jobs"]
    return {"wall_s": wall, "jobs": len(jobs), "jobs_per_min": 60.0 * len(jobs) / wall,
            "mean_job_s": sum(e["seconds"] for e in jobs) / len(jobs),
            "states": sorted({e["state"] for e in jobs})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--modes", default="w1,w2,ray")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="dream3d-batch-bench-") as tmp:
        root = Path(tmp)
        prompts = root / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS[:a.jobs]) + "\n")
        subprocess.run([sys.executable, "-m", "dream3d.cli", "generate", PROMPTS[0], "--out", str(root / "warm"),
                        "--steps", "1", "export.enabled=false"], check=True, capture_output=True)
        results = {}
        for m in modes:
            results[m] = run_mode(prompts, root / m, MODES[m][1], a.steps)
            print(f"{MODES[m][0]:>20}: {results[m]['wall_s']:6.1f} s wall, {results[m]['jobs_per_min']:5.2f} jobs/min"
                  f" (mean {results[m]['mean_job_s']:.1f} s per job, states {results[m]['states']})", flush=True)
    base = results.get("w1")
    print(f"\n{a.jobs} jobs x {a.steps} steps, {os.cpu_count()} CPUs; throughput relative to 1 worker:")
    print(f"{'mode':>20} | {'wall s':>7} | {'jobs/min':>8} | {'x 1 worker':>10}")
    for m, r in results.items():
        ratio = f"{r['jobs_per_min'] / base['jobs_per_min']:.2f}" if base else "-"
        print(f"{MODES[m][0]:>20} | {r['wall_s']:7.1f} | {r['jobs_per_min']:8.2f} | {ratio:>10}")
    if a.json:
        Path(a.json).write_text(json.dumps({"jobs": a.jobs, "steps": a.steps, "cpus": os.cpu_count(),
                                            "results": results}, indent=1))


if __name__ == "__main__":
    main()
