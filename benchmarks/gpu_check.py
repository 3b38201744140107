"""GPU acceptance check: one script, at most about 8 minutes on an H100/H200, one markdown table at the end.

Checks, in this order, each in its own process within one time budget (`--budget`, 470 s):
1. the CUDA-only tests: every tests/test_*.py that skips without CUDA (`skipif(not torch.cuda.is_available()`;
   today tests/test_hashgrid_cuda.py); the first one also builds the CUDA hash-grid kernel;
2. `dream3d bench hashgrid --points 1048576 --device cuda`: forward and forward+backward per backend (torch,
   our CUDA kernel, tinycudann when installed);
3. `benchmarks/sd_speed.py --device cuda`: the full-size random-weight SD 2.1-base prior (fp16 UNet and text
   encoder) stepping `sd-sds` and `sd-vsd`, and IF-I-M stepping `if-sds`, at 64x64 renders: it/s and peak GPU
   memory (torch.cuda.max_memory_allocated);
4. `dream3d generate --config sd-sds` (the shipped recipe; when it is not shipped, its settings as overrides, which
   the table says) for 200 steps end to end with the export, on the same SD folder.
Goal: `sd-sds` >= 20 it/s (training steps of check 4).

Exit status: 0 when every check passed, 1 when one failed or the budget ran out, 2 without a CUDA device (one
line, nothing run). `--dry-run` lists what would run and exits 0, on any machine.

Usage: python benchmarks/gpu_check.py [--dry-run] [--budget SECONDS] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_IT_S = 20.0
E2E_STEPS = 200
CUDA_SKIP = re.compile(r"skipif\(\s*not\s+torch\.cuda\.is_available\(\)")
# the sd-sds settings when configs/sd-sds.yaml is not shipped (CFG 101 = threestudio's 100, 64x64, one view)
SD_SDS_FALLBACK = ["guidance.method=sds", "guidance.guidance_scale=101", "render.height=64", "render.width=64",
                   "render.batch_size=1"]


@dataclass
class Row:
    """One line of the final table."""

    check: str
    result: str  # PASS | FAIL | SKIPPED
    figure: str
    goal: str = ""


def cuda_test_files() -> list[str]:
    """The test files that skip without CUDA, relative to the repository root."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if CUDA_SKIP.search(p.read_text(errors="replace")))


def sd_sds_recipe() -> tuple[list[str], list[str], str]:
    """(`generate` options, key=value overrides, how the sd-sds settings were chosen)."""
    if (ROOT / "configs" / "sd-sds.yaml").is_file():
        return ["--config", "sd-sds"], [], "configs/sd-sds.yaml"
    return [], SD_SDS_FALLBACK, "configs/sd-sds.yaml not shipped: " + " ".join(SD_SDS_FALLBACK)


def plan(work: Path) -> list[tuple[str, list[str], int]]:
    """(name, command, time cap in seconds) of every check, in order."""
    py = sys.executable
    prior = work / "priors" / "sd21-base"
    options, overrides, _ = sd_sds_recipe()
    tests = cuda_test_files()
    return [
        ("CUDA-only tests", [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests], 200),
        ("bench hashgrid 2^20 points", [py, "-m", "dream3d.cli", "bench", "hashgrid", "--points", "1048576",
                                        "--device", "cuda", "--json", str(work / "hashgrid.json")], 90),
        ("full-size priors fp16 (sd_speed)", [py, str(ROOT / "benchmarks" / "sd_speed.py"), "--device", "cuda",
                                              "--cases", "sd-sds,sd-vsd,if-sds", "--steps", "30", "--warmup", "5",
                                              "--prior-dir", str(work / "priors"),
                                              "--json", str(work / "sd_speed.json")], 180),
        (f"sd-sds {E2E_STEPS} steps end to end", [py, "-m", "dream3d.cli", "generate", *options, "--prior", str(prior),
                                                  "--device", "cuda", "--out", str(work / "run"),
                                                  "--steps", str(E2E_STEPS), "a hamburger", *overrides], 240),
    ]


def run_check(cmd: list[str], cap: float, log: Path) -> tuple[int | None, float, str]:
    """Run cmd with a time cap; (exit status or None when it ran out of time, seconds, its output)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=cap, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = None
    return rc, time.perf_counter() - t0, log.read_text(errors="replace")


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(no output)"


def tests_rows(rc, secs, out) -> list[Row]:
    summary = next((line for line in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed|error)", line)),
                   _tail(out))
    ok = rc == 0 and "passed" in summary and "failed" not in summary
    return [Row("CUDA-only tests", "PASS" if ok else "FAIL", summary.strip("= ").strip(), "all pass")]


def hashgrid_rows(rc, secs, out, path: Path) -> list[Row]:
    if rc != 0 or not path.is_file():
        return [Row("bench hashgrid 2^20 points", "FAIL", _tail(out))]
    report = json.loads(path.read_text())
    n, backends = report["points"], report["backends"]
    ref = backends.get("torch")
    rows = []
    for name, r in backends.items():
        speed = f"x{ref['fwd_bwd_s'] / r['fwd_bwd_s']:.1f} vs torch" if ref else ""
        rows.append(Row(f"hash grid `{name}`", "PASS", f"fwd {n / r['fwd_s'] / 1e6:.3g} Mpts/s, fwd+bwd "
                        f"{n / r['fwd_bwd_s'] / 1e6:.3g} Mpts/s {speed}".strip(), ""))
    if "cuda" not in backends:
        rows.append(Row("hash grid `cuda` kernel", "FAIL", "not available (did it build? see `dream3d doctor`)"))
    return rows


def speed_rows(rc, secs, out, path: Path) -> list[Row]:
    if rc != 0 or not path.is_file():
        return [Row("full-size priors fp16 (sd_speed)", "FAIL", _tail(out))]
    report = json.loads(path.read_text())
    return [Row(f"`{name}` full-size random weights", "PASS",
                f"{r['it_per_s']:.1f} it/s, peak {r['peak_gib']:.1f} GiB ({r['prior_dtype']}, {r['render']} renders, "
                f"{r['steps']} steps after {r['warmup']})")
            for name, r in report["cases"].items()]


def e2e_rows(rc, secs, out, run: Path, how: str) -> list[Row]:
    name = f"sd-sds {E2E_STEPS} steps end to end"
    metrics = run / "metrics.jsonl"
    steps = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    glb = run / "export" / "model.glb"
    if rc != 0 or len(steps) != E2E_STEPS or not glb.is_file():
        return [Row(name, "FAIL", f"exit {rc}, {len(steps)} steps, export {'ok' if glb.is_file() else 'missing'}: "
                                  + _tail(out))]
    train_s = steps[-1]["seconds"]
    it_s = E2E_STEPS / train_s
    note = "" if how == "configs/sd-sds.yaml" else f" [{how}]"
    return [Row(name, "PASS", f"{it_s:.1f} it/s training ({train_s:.0f} s), {secs:.0f} s with start-up and "
                              f"export{note}", f"{E2E_STEPS} steps + export"),
            Row(f"goal: sd-sds >= {GOAL_IT_S:g} it/s", "PASS" if it_s >= GOAL_IT_S else "FAIL", f"{it_s:.1f} it/s",
                f">= {GOAL_IT_S:g} it/s")]


def table(rows: list[Row]) -> str:
    lines = ["| check | result | figure | goal |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.result} | {r.figure.replace('|', '/')} | {r.goal} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="list the checks and their commands; run nothing")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for all checks together (default 470)")
    ap.add_argument("--work", default=None, help="keep the priors, logs and run here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the table's rows to this file")
    a = ap.parse_args(argv)
    if a.budget <= 0:
        print("gpu_check: --budget must be positive (seconds)", file=sys.stderr)
        return 2
    if a.dry_run:
        work = Path(a.work) if a.work else Path(tempfile.gettempdir()) / "dream3d-gpu-check"
        checks = plan(work)
        print(f"gpu_check would run, within {a.budget:.0f} s (work folder {work}):")
        for i, (name, cmd, cap) in enumerate(checks, 1):
            print(f"{i}. {name} (at most {cap} s): {shlex.join(cmd)}")
        print(f"sd-sds settings: {sd_sds_recipe()[2]}; goal: sd-sds >= {GOAL_IT_S:g} it/s")
        return 0
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
              "nothing run; `--dry-run` lists the checks", file=sys.stderr)
        return 2
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="dream3d-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    checks = plan(work)
    deadline = time.perf_counter() + a.budget
    print(f"gpu_check on {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}); "
          f"work folder {work}", flush=True)
    rows: list[Row] = []
    for i, (name, cmd, cap) in enumerate(checks):
        left = deadline - time.perf_counter()
        if left < 10:
            rows.append(Row(name, "SKIPPED", f"the {a.budget:.0f} s budget was spent"))
            continue
        if i == 0 and not cmd[cmd.index("no:cacheprovider") + 1:]:
            rows.append(Row(name, "SKIPPED", "no test file skips without CUDA"))
            continue
        print(f"[{i + 1}/{len(checks)}] {name} ...", flush=True)
        rc, secs, out = run_check(cmd, min(cap, left), work / f"check{i + 1}.log")
        if rc is None:
            rows.append(Row(name, "FAIL", f"stopped after {secs:.0f} s (time cap); log {work / f'check{i + 1}.log'}"))
            continue
        if i == 0:
            rows += tests_rows(rc, secs, out)
        elif i == 1:
            rows += hashgrid_rows(rc, secs, out, work / "hashgrid.json")
        elif i == 2:
            rows += speed_rows(rc, secs, out, work / "sd_speed.json")
        else:
            rows += e2e_rows(rc, secs, out, work / "run", sd_sds_recipe()[2])
        print(f"    {secs:.0f} s: {rows[-1].result} {rows[-1].figure}", flush=True)
    if not a.work:  # the priors are the big part (3.4 GB); logs and the run stay for a look
        shutil.rmtree(work / "priors", ignore_errors=True)
    print(f"\nlogs: {work}/check*.log\n")
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 0 if all(r.result == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
