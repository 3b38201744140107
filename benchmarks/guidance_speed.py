"""Seconds per optimisation step of each guidance method, measured side by side in one process.

Every method's recipe (configs/<method>.yaml) trains the same prompt from the same seed; rounds of `--steps`
steps per method are interleaved so that machine load affects every method alike. Prints the median seconds per
step and the ratio to SDS.
Usage: python benchmarks/guidance_speed.py [--methods sds,vsd,nfsd,ssd,cfd] [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main() -> None:
    from dream3d.batch.worker import PRIOR_MUTATING_METHODS
    from dream3d.config import load_config
    from dream3d.trainer import Trainer

    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="sds,vsd,nfsd,ssd,cfd")
    ap.add_argument("--prompt", default="a red cube")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=60, help="steps before timing (the shape forms first)")
    a = ap.parse_args()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    trainers, prior = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            cfg = load_config(CONFIGS / f"{m}.yaml", ["export.enabled=false", "preview_every=100000",
                                                      "checkpoint_every=100000"])
            cfg.prompt = a.prompt
            own = m in PRIOR_MUTATING_METHODS  # VSD and ESD add a LoRA to their prior
            tr = Trainer(cfg, Path(tmp) / m, prior=None if own else prior)
            prior = prior if own else tr.prior
            for _ in range(a.warmup):
                tr.train_step()
                tr.step += 1
            trainers[m] = tr
        times = {m: [] for m in methods}
        for _ in range(a.rounds):
            for m, tr in trainers.items():
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    tr.train_step()
                    tr.step += 1
                times[m].append((time.perf_counter() - t0) / a.steps)
    base = statistics.median(times[methods[0]])
    print(f"{'method':8s} {'s/step':>7s} {'x ' + methods[0]:>8s}")
    for m in methods:
        med = statistics.median(times[m])
        print(f"{m:8s} {med:7.3f} {med / base:8.2f}")


if __name__ == "__main__":
    main()
