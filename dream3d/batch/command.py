"""`dream3d batch` options (argparse) and handler; registered by `dream3d.cli.build_parser`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dream3d.errors import Dream3DError

EPILOG = """examples:
  dream3d batch prompts.txt --seeds 0,1 --workers 2 --steps 600
  dream3d batch prompts.jsonl --out outputs/lib --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
  dream3d batch prompts.txt --ray              # a local Ray
  dream3d batch prompts.txt --ray auto         # the Ray cluster this node belongs to (ray start ...)
rerun the same command to continue; --retry-failed also retries failed jobs."""


def add_batch_parser(sub) -> None:
    """`dream3d batch`: its options share the spelling and the meaning of generate's (--steps, --seed, --prior,
    --config, --out)."""
    from dream3d.console import HelpFormatter

    b = sub.add_parser("batch", help="generate every prompt of a file: resumable, isolated, parallel",
                       epilog=EPILOG, formatter_class=HelpFormatter)
    b.set_defaults(command_parser=b)
    b.add_argument("prompts", metavar="PROMPTS",
                   help=".txt (one prompt per line, # comments) or .jsonl (prompt, seed, steps, method, config, "
                        "prior, overrides per line)")
    b.add_argument("words", nargs="*", metavar="key=value", help="config overrides for every job")
    b.add_argument("--config", help="a YAML config file, or a shipped recipe's name (e.g. vsd), for every job (a "
                                    "JSONL line may name its own; default: the CPU default config)")
    b.add_argument("--out", help="the batch folder (default: outputs/batch-<prompts file name>)")
    b.add_argument("--steps", type=int, help="optimisation steps of every job (a JSONL line's own steps win; "
                                             "default: the config's)")
    seeds = b.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="random seed of every job (a JSONL line's own seed wins; default: "
                                                "the config's, 0)")
    seeds.add_argument("--seeds", help="comma-separated seeds; every prompt runs once per seed (default: the "
                                       "config's seed)")
    b.add_argument("--prior", help="the diffusion prior of every job: a diffusers folder or a hub id (a JSONL "
                                   "line's own prior wins; default: the bundled shapes prior)")
    b.add_argument("--workers", type=int, help="local worker processes (default: one per GPU, else 1); with a "
                                               "local --ray: its number of CPUs")
    b.add_argument("--shard", metavar="I/N", help="run only shard I of N (0 <= I < N), e.g. for Slurm arrays "
                                                  "(default: all jobs)")
    b.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run jobs as Ray tasks: on the cluster at ADDRESS (e.g. auto), else on a local Ray "
                        "(default: local worker processes)")
    b.add_argument("--retry-failed", action="store_true", help="run failed jobs again (default: skip them)")
    b.add_argument("--dry-run", action="store_true", help="list this shard's jobs and what would run; run nothing")
    b.set_defaults(func=cmd_batch)


def continue_command(a: argparse.Namespace, batch_dir: str | Path) -> str:
    """The command that continues the batch `a` asked for (its folder spelled out), quoted for a shell."""
    args = ["dream3d", "batch", a.prompts, *a.words, "--out", str(batch_dir)]
    for flag, value in (("--config", a.config), ("--steps", a.steps), ("--seed", a.seed), ("--seeds", a.seeds),
                        ("--prior", a.prior), ("--workers", a.workers), ("--shard", a.shard)):
        if value is not None:
            args += [flag, str(value)]
    if a.ray is not None:
        args += [f"--ray={a.ray}"] if a.ray else ["--ray"]
    if a.retry_failed:
        args.append("--retry-failed")
    return shlex.join(args)


def cmd_batch(a: argparse.Namespace) -> int:
    from dream3d.batch.jobs import parse_seeds, parse_shard
    from dream3d.batch.run import EXIT_INTERRUPTED, BatchOptions, default_batch_dir, run_batch
    from dream3d.console import split_words
    from dream3d.recipes import config_file

    words = list(a.words)
    if a.ray and "=" in a.ray:  # `--ray key=value`: the override is not an address
        words.insert(0, a.ray)
        a.ray = ""
    a.words = words
    texts, overrides = split_words(words)
    if texts:
        raise Dream3DError(f"unexpected argument {texts[0]!r}; give one prompts file, then key=value overrides")
    if a.workers is not None and a.workers < 1:
        raise Dream3DError(f"--workers must be at least 1, got {a.workers}")
    if not Path(a.prompts).is_file():
        raise Dream3DError(f"prompts file not found: {a.prompts}")
    for key, value in (("steps", a.steps), ("prior", a.prior)):  # as in generate: the flag wins over key=value
        if value is not None:
            overrides.append(f"{key}={value}")
    config = config_file(a.config)
    seeds = [a.seed] if a.seed is not None else parse_seeds(a.seeds)
    opts = BatchOptions(prompts=a.prompts, out=a.out, config=str(config) if config else None, overrides=overrides,
                        seeds=seeds, workers=a.workers, shard=parse_shard(a.shard), ray=a.ray,
                        retry_failed=a.retry_failed, dry_run=a.dry_run)
    status = run_batch(opts)
    if status == EXIT_INTERRUPTED:
        batch_dir = a.out or default_batch_dir(a.prompts)
        print(f"dream3d batch: stopped; running jobs went back to pending with their checkpoints; continue with: "
              f"{continue_command(a, batch_dir)}", file=sys.stderr)
    return status
