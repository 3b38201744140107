"""`dream3d batch`: many prompts in one resumable, isolated, parallel run.

- `jobs`: prompt files (.txt / .jsonl) -> resolved jobs with deterministic names; shards.
- `manifest`: `batch.json` (job states, errors, times, outputs), merged under a file lock, written atomically.
- `worker`: one job = the ordinary generation path (Trainer, which resumes from the run's checkpoint, + export).
- `local` / `ray_runner`: run jobs in N spawned worker processes or as Ray tasks; both report the same events.
- `progress`: the live terminal table; `gallery`: `index.html`; `run`: the command tying them together.

Nothing here imports torch or ray at import time.
"""

from dream3d.batch.jobs import Job, build_jobs, parse_prompts, parse_seeds, parse_shard, shard_jobs

__all__ = ["Job", "build_jobs", "parse_prompts", "parse_seeds", "parse_shard", "shard_jobs"]
