"""`dream3d batch` options (argparse) and handler; registered by `dream3d.cli.build_parser`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dream3d.errors import Dream3DError

EPILOG = """examples:
  dream3d batch prompts.txt --seeds 0,1 --workers 2 steps=600
  dream3d batch prompts.jsonl --out outputs/lib --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
  dream3d batch prompts.txt --ray              # a local Ray
  dream3d batch prompts.txt --ray auto         # the Ray cluster this node belongs to (ray start ...)
rerun the same command to continue; --retry-failed also retries failed jobs."""


def add_batch_parser(sub) -> None:
    b = sub.add_parser("batch", help="generate every prompt of a file: resumable, isolated, parallel",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("prompts", metavar="PROMPTS",
                   help=".txt (one prompt per line, # comments) or .jsonl (prompt, seed, steps, method, config, "
                        "prior, overrides per line)")
    b.add_argument("words", nargs="*", metavar="key=value", help="config overrides for every job")
    b.add_argument("--config", help="YAML config for every job (a JSONL line may name its own)")
    b.add_argument("--out", help="batch folder (default: outputs/batch-<prompts file name>)")
    b.add_argument("--seeds", help="comma-separated seeds; every prompt runs once per seed (default: the config's)")
    b.add_argument("--workers", type=int, help="local worker processes (default: one per GPU, else 1); with a "
                                               "local --ray: its number of CPUs")
    b.add_argument("--shard", metavar="I/N", help="run only shard I of N (0 <= I < N), e.g. for Slurm arrays")
    b.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run jobs as Ray tasks: on the cluster at ADDRESS (e.g. auto), else on a local Ray")
    b.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    b.add_argument("--dry-run", action="store_true", help="list this shard's jobs and what would run; run nothing")
    b.set_defaults(func=cmd_batch)


def cmd_batch(a: argparse.Namespace) -> int:
    from dream3d.batch.jobs import parse_seeds, parse_shard
    from dream3d.batch.run import BatchOptions, run_batch
    from dream3d.console import split_words

    words = list(a.words)
    if a.ray and "=" in a.ray:  # `--ray key=value`: the override is not an address
        words.insert(0, a.ray)
        a.ray = ""
    texts, overrides = split_words(words)
    if texts:
        raise Dream3DError(f"unexpected argument {texts[0]!r}; give one prompts file, then key=value overrides")
    if a.workers is not None and a.workers < 1:
        raise Dream3DError(f"--workers must be at least 1, got {a.workers}")
    if not Path(a.prompts).is_file():
        raise Dream3DError(f"prompts file not found: {a.prompts}")
    opts = BatchOptions(prompts=a.prompts, out=a.out, config=a.config, overrides=overrides,
                        seeds=parse_seeds(a.seeds), workers=a.workers, shard=parse_shard(a.shard), ray=a.ray,
                        retry_failed=a.retry_failed, dry_run=a.dry_run)
    return run_batch(opts)
