"""`dream3d` command line: generate | edit | refine | export | batch | prior train|sample|eval | bench | doctor.

User mistakes print one line (`dream3d: error: ...`) and exit 2. `generate` prints the run folder as the last
line of stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import TYPE_CHECKING

from dream3d.console import (HelpFormatter, ProgressReport, continue_hint, quiet_libraries, resume_command,
                             split_words)
from dream3d.errors import DivergedError, Dream3DError

if TYPE_CHECKING:
    from dream3d.config import RunConfig
    from dream3d.run_folder import RunFolder

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def run_and_export(cfg: RunConfig, run: RunFolder, label: str = "generate") -> int:
    """Run the generation with a progress report (both stages of a two-stage recipe), export the last stage when
    it finished, print its run folder last; the exit status. A stop (Ctrl-C, SIGTERM) says where the run is and
    prints the command that continues it."""
    from dream3d.pipeline import run_generation

    report = ProgressReport(label)
    try:
        result = run_generation(cfg, run, events=report, log=report.line)
    except KeyboardInterrupt:  # outside the training loop (loading, initialising, exporting)
        report.line(f"dream3d: interrupted; {continue_hint(report.last_event, run.path)}")
        return EXIT_INTERRUPTED
    print(result.run.path)
    if result.state != "done":
        report.line(f"dream3d: stopped at step {result.trainer.step}/{result.trainer.cfg.steps}; continue with: "
                    f"{resume_command(result.run.path)}")
        return EXIT_INTERRUPTED
    return 0


def _resume(a: argparse.Namespace) -> tuple[RunFolder, RunConfig]:
    """The run folder and config `generate --resume` continues: only what a resume can honour (more steps) may
    be given; a prompt or setting that contradicts the run is a Dream3DError."""
    from dream3d.config import check_range, first_difference, load_config
    from dream3d.errors import safe_text
    from dream3d.run_folder import RunFolder

    run = RunFolder(a.resume)
    cfg = run.read_config()
    where = safe_text(run.path)
    if a.out or a.config:
        raise Dream3DError(f"--resume continues {where} with its own config in its own folder; drop "
                           f"{'--out' if a.out else '--config'} (or start a fresh run without --resume)")
    if a.prompt is not None and a.prompt != cfg.prompt:
        raise Dream3DError(f"--resume continues {where}, whose prompt is '{safe_text(cfg.prompt, 80)}'; drop the "
                           f"prompt '{safe_text(a.prompt, 80)}' or start a fresh run")
    overrides = [*a.overrides, *(f"{k}={v}" for k, v in (("prior", a.prior), ("seed", a.seed), ("device", a.device))
                                 if v is not None)]
    diff = first_difference(cfg, load_config(None, overrides, base=cfg))
    if diff:
        key, there, given = diff
        raise Dream3DError(f"--resume cannot change {key} ({safe_text(repr(there), 60)} in {where}, "
                           f"{safe_text(repr(given), 60)} given); start a fresh run for other settings")
    if a.steps is not None:
        check_range("steps", a.steps, "--steps")
        done = run.read_status().get("step")
        if isinstance(done, int) and a.steps < done:
            raise Dream3DError(f"--steps {a.steps}: {where} is already at step {done}; give at least {done}")
        cfg.steps = a.steps
    return run, cfg


def _new_run(cfg: RunConfig, out: str | None, command: str, source: str | None = None) -> RunFolder:
    """The output run folder of `command` for `cfg`, checked before anything loads: `out` (never the source
    run, a file, or a folder holding anything but an unfinished run of the same settings), else a fresh folder
    under outputs/ (`cfg.name` when set)."""
    from dream3d.run_folder import RunFolder, default_run_dir, reserve_run_dir

    if out is None and not cfg.name:
        return RunFolder(reserve_run_dir(default_run_dir(cfg).path))
    run = RunFolder(out) if out is not None else default_run_dir(cfg)
    if source is not None:
        run.check_not_inside(source, command)
    run.check_new_run(cfg)
    run.check_target()
    return run


def cmd_generate(a: argparse.Namespace) -> int:
    from dream3d.config import validate_run
    from dream3d.pipeline import generation_config

    texts, a.overrides = split_words(a.words)
    if len(texts) > 1:
        raise Dream3DError(f"give one prompt in quotes, e.g. dream3d generate \"a red cube\"; got {len(texts)} words")
    a.prompt = texts[0] if texts else None
    if a.resume:
        run, cfg = _resume(a)
        status = run.read_status()
        if status.get("state") == "done" and status.get("step") == cfg.steps and run.export_record.is_file():
            print(f"dream3d: {run.path} already finished at step {cfg.steps} and is exported; give more --steps "
                  f"to go on, or redo the export with: dream3d export {shlex.quote(str(run.path))}", file=sys.stderr)
            print(run.path)
            return 0
    else:
        if a.prompt is None:
            raise Dream3DError("give a prompt, e.g. dream3d generate \"a red cube\" (or --resume RUN_DIR)")
        if not a.prompt.strip():
            raise Dream3DError("the prompt is empty; try for example 'a red cube'")
        overrides = list(a.overrides)
        for key, value in (("prior", a.prior), ("seed", a.seed), ("steps", a.steps), ("device", a.device)):
            if value is not None:
                overrides.append(f"{key}={value}")
        cfg, chosen = generation_config(a.config, overrides)
        print(f"dream3d: {chosen}", file=sys.stderr)
        cfg.prompt = a.prompt  # data, never parsed as YAML or interpolated
        if not cfg.prompt.strip():
            raise Dream3DError("the prompt is empty; try for example 'a red cube'")
        validate_run(cfg)
        run = _new_run(cfg, a.out, "generate")
    with run.locked("generate"):
        return run_and_export(cfg, run)


def cmd_edit(a: argparse.Namespace) -> int:
    from dream3d.config import validate_run
    from dream3d.pipeline import edit_config

    texts, overrides = split_words(a.words)
    if texts:
        raise Dream3DError(f"unexpected argument {texts[0]!r}; overrides look like key=value")
    if a.steps is not None:
        overrides.append(f"steps={a.steps}")
    cfg = edit_config(a.run_dir, a.prompt, a.source_prompt, a.config, overrides)
    validate_run(cfg)
    run = _new_run(cfg, a.out, "edit", source=a.run_dir)
    with run.locked("edit"):
        return run_and_export(cfg, run, "edit")


def cmd_refine(a: argparse.Namespace) -> int:
    from dream3d.config import validate_run
    from dream3d.pipeline import mesh_stage_config
    from dream3d.run_folder import RunFolder

    texts, overrides = split_words(a.words)
    if texts:
        raise Dream3DError(f"unexpected argument {texts[0]!r}; overrides look like key=value")
    cfg = mesh_stage_config(a.run_dir, a.config, overrides, a.steps)
    validate_run(cfg)
    if a.out:
        run = _new_run(cfg, a.out, "refine", source=a.run_dir)
    else:  # RUN-mesh: a second refine of the same run resumes it
        run = RunFolder(a.run_dir).mesh_stage
        run.check_target()
    with run.locked("refine"):
        return run_and_export(cfg, run, "refine")


def cmd_export(a: argparse.Namespace) -> int:
    from dream3d.config import check_range
    from dream3d.pipeline import export_run
    from dream3d.run_folder import RunFolder

    run = RunFolder(a.run_dir)
    formats = [f.strip() for f in a.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in ("glb", "obj")]
    if unknown or not formats:
        raise Dream3DError(f"--format takes glb and/or obj, comma-separated; got {a.format!r}")
    check_range("export.resolution", a.resolution, "--resolution")
    check_range("export.texture_size", a.texture, "--texture")
    run.read_config()  # a run folder (and a readable config) before the lock creates anything
    with run.locked("export"):
        export_run(run, formats=formats, resolution=a.resolution, texture_size=a.texture,
                   turntable=not a.no_turntable, log=lambda m: print(m, file=sys.stderr))
    print(run.export)
    return 0


def _shape_weights(items: list[str]) -> dict[str, float]:
    """["wedge=3", ...] -> {"wedge": 3.0}; a malformed item is a user error."""
    weights = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise Dream3DError(f"--shape-weight wants SHAPE=NUMBER, got {item!r}") from None
    return weights


def cmd_prior_train(a: argparse.Namespace) -> int:
    from dream3d.config import check_arguments
    from dream3d.priors.shapes_prior_train import train_shapes_prior

    check_arguments("prior train", vars(a))
    if a.resolution % 8:
        raise Dream3DError(f"prior train --resolution must be a multiple of 8 (the UNet halves it 3 times); "
                           f"got {a.resolution}")

    out = train_shapes_prior(a.out, steps=a.steps, resolution=a.resolution, batch=a.batch, seed=a.seed, lr=a.lr,
                             device=a.device, checkpoint_every=a.checkpoint_every, max_minutes=a.max_minutes,
                             init_from=a.init, warmup=a.warmup, shape_weights=_shape_weights(a.shape_weight))
    print(out)
    return 0


def cmd_prior_sample(a: argparse.Namespace) -> int:
    from dream3d.config import check_arguments
    from dream3d.prior_tools import prior_sample

    check_arguments("prior sample", vars(a))

    print(prior_sample(a.prompt, a.out, n=a.n, steps=a.steps, cfg=a.cfg, prior_name=a.prior, seed=a.seed,
                       device=_device(a.device)))
    return 0


def cmd_prior_eval(a: argparse.Namespace) -> int:
    from dream3d.config import check_arguments
    from dream3d.prior_tools import format_eval_table, prior_eval

    check_arguments("prior eval", vars(a))

    result = prior_eval(a.prior, n=a.n, steps=a.steps, cfg=a.cfg, seed=a.seed, device=_device(a.device),
                        json_path=a.json, grid_path=a.grid)
    print(format_eval_table(result))
    return 0


def cmd_bench_hashgrid(a: argparse.Namespace) -> int:
    from dream3d.bench_hashgrid import bench_hashgrid
    from dream3d.config import check_arguments

    check_arguments("bench hashgrid", vars(a))

    bench_hashgrid(points=a.points, levels=a.levels, json_path=a.json, device=a.device)
    return 0


def cmd_bench_splat(a: argparse.Namespace) -> int:
    from dream3d.bench_splat import bench_splat, parse_backends
    from dream3d.config import check_arguments

    check_arguments("bench splat", vars(a))
    bench_splat(gaussians=a.gaussians, size=a.size, views=a.views, rounds=a.rounds, threads=a.threads,
                json_path=a.json, device=a.device, backends=parse_backends(a.backends))
    return 0


def cmd_bench_shapes(a: argparse.Namespace) -> int:
    from dream3d.bench_shapes import bench_shapes

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise Dream3DError(f"--seeds takes comma-separated integers, got {a.seeds!r}") from None
    texts, a.overrides = split_words(a.words)
    if texts:
        raise Dream3DError(f"unexpected argument {texts[0]!r}; overrides look like key=value")
    stages = [st.strip() for st in a.stages.split(",") if st.strip()]
    bench_shapes(methods, prompts_file=a.prompts, seeds=seeds, steps=a.steps, json_path=a.json, config=a.config,
                 out_root=a.out, overrides=a.overrides, stages=stages)
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    from dream3d.doctor import run_doctor

    return run_doctor(a.require)


def _device(name: str) -> str:
    from dream3d.system import resolve_device
    return str(resolve_device(name))


# --- parser ----------------------------------------------------------------------------------------------------
# The options several commands share: one spelling and one meaning everywhere (batch included).
STEPS_HELP = "optimisation steps of the run (default: the config's; `steps=N` says the same)"
SEED_HELP = "random seed: the same seed gives the same result (default: the config's, 0)"
PRIOR_HELP = "the diffusion prior: a diffusers folder or a hub id (default: the bundled shapes prior)"
CONFIG_HELP = "a YAML config file, or a shipped recipe's name (e.g. vsd; see configs/)"


def add_command(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser with dream3d's help format; its own usage is shown on its errors."""
    parser = sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)
    parser.set_defaults(command_parser=parser)
    return parser


def _add_run_commands(sub) -> None:
    """generate, edit, refine, export."""
    from dream3d.guidance.registry import methods

    g = add_command(sub, "generate", help="generate a 3D asset from a prompt",
                    description="Generate a 3D asset from a prompt. Guidance methods (guidance.method=NAME, or "
                    "--config NAME for its recipe): "
                    + "; ".join(f"{n}: {s.description}" for n, s in methods().items()) + ".",
                    epilog="examples:\n  dream3d generate \"a red cube\" --steps 600 --seed 1\n"
                           "  dream3d generate --config vsd \"a blue torus\" guidance.guidance_scale=7.5\n"
                           "  dream3d generate --resume outputs/<run>     # continue a stopped run")
    g.add_argument("words", nargs="*", metavar="PROMPT [key=value ...]",
                   help='the text prompt, e.g. "a red cube", then config overrides such as guidance.guidance_scale=7.5')
    g.add_argument("--config", help=CONFIG_HELP + " (default: the CPU default config)")
    g.add_argument("--prior", help=PRIOR_HELP)
    g.add_argument("--out", help="the run folder (default: outputs/<prompt>-s<seed>-<time>)")
    g.add_argument("--seed", type=int, help=SEED_HELP)
    g.add_argument("--steps", type=int, help=STEPS_HELP)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="where to run (default: the config's, auto: CUDA when present, else the CPU)")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the stopped run in RUN_DIR from its checkpoint (with its own settings; "
                        "--steps may raise its total; default: start a new run)")

    ed = add_command(sub, "edit", help="edit a finished run with a new prompt (DDS)",
                     epilog="example:\n  dream3d edit outputs/<run> --prompt \"a blue cube\" --steps 300")
    ed.add_argument("run_dir", help="the source run folder")
    ed.add_argument("words", nargs="*", metavar="key=value", help="config overrides")
    ed.add_argument("--prompt", required=True, help="the target prompt (required)")
    ed.add_argument("--source-prompt", help="what the source shows (default: the source run's prompt)")
    ed.add_argument("--steps", type=int, help="optimisation steps of the edit (default: the recipe's, 300)")
    ed.add_argument("--config", help=CONFIG_HELP + " (default: the dds-edit recipe)")
    ed.add_argument("--out", help="the new run folder (default: outputs/<prompt>-s<seed>-<time>)")

    rf = add_command(sub, "refine", help="mesh stage: refine a finished NeRF run as a DMTet mesh",
                     epilog="example:\n  dream3d refine outputs/<run> --steps 400   # again: resumes RUN_DIR-mesh")
    rf.add_argument("run_dir", help="the NeRF run folder")
    rf.add_argument("words", nargs="*", metavar="key=value", help="config overrides")
    rf.add_argument("--steps", type=int,
                    help="optimisation steps of the mesh stage (default: the NeRF run's mesh.refine_steps when set, "
                         "else the mesh recipe's, 400)")
    rf.add_argument("--config", help=CONFIG_HELP + " (default: the mesh recipe)")
    rf.add_argument("--out", help="the new run folder (default: RUN_DIR-mesh)")

    e = add_command(sub, "export", help="export a run's mesh (GLB/OBJ) and turntable video")
    e.add_argument("run_dir", help="the run folder to export (a NeRF or a mesh run)")
    e.add_argument("--format", default="glb,obj", help="comma-separated file formats: glb,obj")
    e.add_argument("--resolution", type=int, default=256, help="marching-cubes grid resolution")
    e.add_argument("--texture", type=int, default=1024, help="texture size in pixels")
    e.add_argument("--no-turntable", action="store_true", help="skip the turntable video (default: write it)")
    for parser, func in ((g, cmd_generate), (ed, cmd_edit), (rf, cmd_refine), (e, cmd_export)):
        parser.set_defaults(func=func)


def _add_prior_commands(sub) -> None:
    """prior train | sample | eval."""
    pr = add_command(sub, "prior", help="train, sample or evaluate the bundled shapes prior").add_subparsers(
        dest="prior_command", required=True, metavar="{train,sample,eval}")
    device_help = "auto (CUDA when present, else the CPU), cpu or cuda"
    t = add_command(pr, "train", help="train the shapes prior (resumes from OUT/train_state)")
    t.add_argument("--out", required=True, help="the prior folder to write (required)")
    t.add_argument("--steps", type=int, default=20000, help="training steps")
    t.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    t.add_argument("--batch", type=int, default=64, help="images per step")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    t.add_argument("--device", default="auto", help=device_help)
    t.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop (with a checkpoint and a usable prior) after this long (default: no limit)")
    t.add_argument("--init", default=None, help="fine-tune from this prior folder (default: a random init)")
    t.add_argument("--warmup", type=int, default=500, help="learning-rate warm-up steps")
    t.add_argument("--shape-weight", action="append", default=[], metavar="SHAPE=W",
                   help="sample SHAPE W times as often as the others (repeatable), e.g. wedge=3 (default: all 1)")
    t.set_defaults(func=cmd_prior_train)
    s = add_command(pr, "sample", help="sample a grid of images around the object")
    s.add_argument("--prompt", required=True, help="the text prompt (required)")
    s.add_argument("--n", type=int, default=8, help="images, at evenly spaced azimuths")
    s.add_argument("--steps", type=int, default=50, help="DDIM sampling steps")
    s.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the prior's recommended)")
    s.add_argument("--prior", default=None, help=PRIOR_HELP)
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--device", default="auto", help=device_help)
    s.add_argument("--out", required=True, help="the PNG file to write (required)")
    s.set_defaults(func=cmd_prior_sample)
    ev = add_command(pr, "eval", help="score color and shape accuracy of a prior")
    ev.add_argument("--prior", default=None, help=PRIOR_HELP)
    ev.add_argument("--n", type=int, default=8, help="samples per (shape, color) prompt")
    ev.add_argument("--steps", type=int, default=50, help="DDIM sampling steps")
    ev.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the prior's recommended)")
    ev.add_argument("--seed", type=int, default=0, help="random seed")
    ev.add_argument("--device", default="auto", help=device_help)
    ev.add_argument("--json", default=None, help="also write the scores to this JSON file (default: none)")
    ev.add_argument("--grid", default=None, help="also save all samples as a PNG grid (default: none)")
    ev.set_defaults(func=cmd_prior_eval)


def _add_bench_commands(sub) -> None:
    """bench hashgrid | splat | shapes."""
    from dream3d.bench_splat import add_arguments as add_splat_arguments

    b = add_command(sub, "bench", help="benchmarks").add_subparsers(dest="bench_command", required=True,
                                                                    metavar="{hashgrid,splat,shapes}")
    h = add_command(b, "hashgrid", help="hash-grid encoding speed per backend")
    h.add_argument("--points", type=int, default=2**18, help="points encoded per call")
    h.add_argument("--levels", type=int, default=16, help="hash-grid levels")
    h.add_argument("--json", default=None, help="also write the timings to this JSON file (default: none)")
    h.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu or cuda")
    h.set_defaults(func=cmd_bench_hashgrid)
    sp = add_command(b, "splat", help="Gaussian splatting speed per backend (forward, forward+backward)")
    add_splat_arguments(sp)
    sp.set_defaults(func=cmd_bench_splat)
    sh = add_command(b, "shapes", help="generation quality against the shapes world's ground truth")
    sh.add_argument("--methods", default="sds", help="comma-separated guidance methods")
    sh.add_argument("--prompts", default=None, help="file with one prompt per line (default: every shape x 2 colors)")
    sh.add_argument("--seeds", default="0,1", help="comma-separated seeds; every prompt runs once per seed")
    sh.add_argument("--stages", default="nerf", help="comma-separated: nerf,mesh,gaussian (mesh refines each NeRF "
                    "run; gaussian trains configs/gaussian.yaml on the same prompts and seeds)")
    sh.add_argument("--steps", type=int, default=None, help="optimisation steps of every run (default: each "
                                                            "method's recipe)")
    sh.add_argument("--config", default=None, help=CONFIG_HELP + " for every run (default: each method's recipe)")
    sh.add_argument("--out", default="outputs/bench", help="the folder of the benchmark's run folders and of "
                                                          "rows.jsonl, its rows as they finish; rerunning the same "
                                                          "command continues from it")
    sh.add_argument("--json", default=None, help="also write all the rows to this JSON file (default: none)")
    sh.add_argument("words", nargs="*", metavar="key=value", help="config overrides")
    sh.set_defaults(func=cmd_bench_shapes)


def _add_doctor_command(sub) -> None:
    """doctor."""
    from dream3d.doctor import REQUIRABLE

    d = add_command(sub, "doctor", help="check the install: device, versions, which backends auto picks and why",
                    description="Print the device, torch/CUDA versions, which backend auto picks for the hash "
                    "grid, ray marching and rasterizer and why, the free disk in the kernel cache, and a verdict.")
    d.add_argument("--require", action="append", default=[], choices=REQUIRABLE, metavar="BACKEND",
                   help=f"exit with status 1 unless BACKEND works (repeatable): {', '.join(REQUIRABLE)} "
                   "(default: none required; the verdict only)")
    d.set_defaults(func=cmd_doctor)


def build_parser() -> argparse.ArgumentParser:
    """The `dream3d` parser: every subcommand, each option with its help and default."""
    p = argparse.ArgumentParser(prog="dream3d", description="Text to 3D by score distillation.",
                                formatter_class=HelpFormatter,
                                epilog="`dream3d COMMAND --help` shows a command's options.")
    p.add_argument("-v", "--verbose", action="store_true", help="log backend choices and details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_run_commands(sub)
    _add_prior_commands(sub)
    _add_bench_commands(sub)
    _add_doctor_command(sub)
    from dream3d.batch.command import add_batch_parser  # dream3d batch (see dream3d/batch/)
    add_batch_parser(sub)
    return p


MESSAGE_LIMIT = 240  # characters of an error message (the line also holds "dream3d: error: " and the count cut)


def _error(message: object) -> None:
    """Print one error line: control characters escaped, at most MESSAGE_LIMIT characters of message."""
    from dream3d.errors import safe_text
    print(f"dream3d: error: {safe_text(message, MESSAGE_LIMIT)}", file=sys.stderr)


def _os_error(e: OSError) -> str:
    """One line for a file-system failure (a full disk, a read-only or virtual file system, permissions)."""
    from dream3d.errors import os_error_text

    return f"{e.filename}: {os_error_text(e)}" if e.filename else os_error_text(e)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        a, extra = parser.parse_known_args(argv)
        # positionals after options (dream3d generate --steps 5 "a red cube" k=v) land in `extra`
        bad = [x for x in extra if x.startswith("-") or not hasattr(a, "words")]
        if bad:
            getattr(a, "command_parser", parser).error(f"unrecognized arguments: {' '.join(bad)}")
        if extra:
            a.words = list(a.words) + extra
        logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(name)s: %(message)s")
        quiet_libraries()
        return a.func(a)
    except DivergedError as e:
        _error(e)
        return EXIT_DIVERGED
    except Dream3DError as e:
        _error(e)
        return EXIT_USAGE
    except OSError as e:
        _error(_os_error(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dream3d: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
