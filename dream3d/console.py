"""What the command-line front ends share (`dream3d` and its batch mode): quiet library loading, the word
splitting of `PROMPT key=value ...`, and the progress report drawn from a generation's events (a bar on a
terminal, step and phase lines elsewhere)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import shlex
import time
from pathlib import Path
from typing import TextIO

from dream3d.events import Event

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def quiet_libraries() -> None:
    """Keep diffusers/transformers load chatter (progress bars, advisory warnings) off the terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings
    warnings.filterwarnings("ignore", message=".*low_cpu_mem_usage.*")
    try:
        import transformers
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        import diffusers
        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - only cosmetics
        pass


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` of every dream3d command: descriptions and epilogs as written, and each option's default appended
    as "(default: X)" unless its help already says it (options without a default say what happens instead)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS or \
                default == [] or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def split_words(words: list[str]) -> tuple[list[str], list[str]]:
    """(free text words, key=value overrides) of a positional word list.

    >>> split_words(["a red cube", "steps=10"])
    (['a red cube'], ['steps=10'])
    """
    over = [w for w in words if _OVERRIDE.match(w)]
    return [w for w in words if not _OVERRIDE.match(w)], over


def format_duration(seconds: float) -> str:
    """Seconds as a short duration: "42s", "8m05s", "1h02m".

    >>> format_duration(485.2), format_duration(3725), format_duration(7.4)
    ('8m05s', '1h02m', '7s')
    """
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressReport:
    """An event callback that shows a generation's progress on `stream` (stderr by default).

    On a terminal: a tqdm bar per stage. Otherwise (a log file, CI, nohup): one line per `every_steps` steps
    (default: a twentieth of the stage) or per `every_seconds` seconds, whichever comes first, plus the first and
    the last step: `generate: step 120/1200 (10%) loss 0.0123 2.05 it/s ETA 8m46s`. In both cases one line when
    a stage starts or resumes, when a long phase begins (`Event` kind "phase": loading the prior, the first step,
    the mesh stage's initialisation, the turntable) and when it took `phase_seconds` or more, when the export
    begins, and when a stage ends. The mesh stage's lines are labelled "refine".
    """

    def __init__(self, label: str = "generate", stream: TextIO | None = None, terminal: bool | None = None,
                 every_steps: int | None = None, every_seconds: float = 30.0, phase_seconds: float = 2.0):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = _isatty(self.stream) if terminal is None else terminal
        self.every_steps = every_steps
        self.every_seconds = float(every_seconds)
        self.phase_seconds = float(phase_seconds)
        self._bar = None
        self._phase: tuple[Event, float] | None = None  # the open phase and when it began (monotonic s)
        self._first: tuple[int, float] | None = None  # (step, time) of the stage's first step event
        self._last_line = (0, 0.0)  # (step, time) of the last step line
        self.last_event: Event | None = None

    # --- output ----------------------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        """Print one line, above the bar when one is drawn."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _name(self, e: Event) -> str:
        return "refine" if e.stage == "mesh" else self.label

    # --- events ----------------------------------------------------------------------------------------------
    def __call__(self, e: Event) -> None:
        now = time.monotonic()
        self.last_event = e
        self._close_phase(e, now)
        if e.kind == "phase":
            self._phase = (e, now)
            self.line(f"{self._name(e)}: {e.message} ...")
        elif e.kind == "start":
            self._first, self._last_line = None, (e.step, now)
            where = f"resuming {e.run_dir} at step {e.step}/{e.steps}" if e.resumed else \
                f"{e.run_dir}: {e.steps} steps"
            self.line(f"{self._name(e)}: {where}")
            if self.terminal:
                from tqdm import tqdm
                self._bar = tqdm(total=e.steps, initial=e.step, desc=self._name(e), file=self.stream,
                                 dynamic_ncols=True)
        elif e.kind == "step":
            self._on_step(e, now)
        elif e.kind in ("done", "stopped"):
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif self._last_line[0] != e.step and self._first is not None:
                self.line(self.step_line(e, now))
            what = "done" if e.kind == "done" else "stopped"
            self.line(f"{self._name(e)}: {what} at step {e.step}/{e.steps} (checkpoint saved in {e.run_dir})")
        elif e.kind == "export":
            self.line(f"{self._name(e)}: exporting {e.run_dir} ...")

    def _close_phase(self, e: Event, now: float) -> None:
        if self._phase is None:
            return
        began, t0 = self._phase
        self._phase = None
        if began.phase != "turntable" and now - t0 >= self.phase_seconds:  # the export logs its own times
            self.line(f"{self._name(began)}: {began.message.split(' (')[0]}: {now - t0:.1f} s")

    def _on_step(self, e: Event, now: float) -> None:
        if self._first is None:
            self._first = (e.step, now)
        if self._bar is not None:
            self._bar.update(e.step - self._bar.n)
            self._bar.set_postfix(loss=f"{e.metrics.get('loss', float('nan')):.3g}", t=int(e.metrics.get("t", 0)))
            return
        every = self.every_steps or max(1, e.steps // 20)
        last_step, last_t = self._last_line
        if e.step == self._first[0] or e.step >= e.steps or e.step - last_step >= every or \
                now - last_t >= self.every_seconds:
            self._last_line = (e.step, now)
            self.line(self.step_line(e, now))

    def step_line(self, e: Event, now: float) -> str:
        """`generate: step 120/1200 (10%) loss 0.0123 2.05 it/s ETA 8m46s`; the rate counts the steps after the
        stage's first one in this process (that one may include compiling the kernel)."""
        pct = 100.0 * e.step / max(e.steps, 1)
        parts = [f"{self._name(e)}: step {e.step}/{e.steps} ({pct:.0f}%)"]
        if "loss" in e.metrics:
            parts.append(f"loss {e.metrics['loss']:.4g}")
        first_step, first_t = self._first or (e.step, now)
        if e.step > first_step and now > first_t:
            rate = (e.step - first_step) / (now - first_t)
            parts.append(f"{rate:.2f} it/s ETA {format_duration((e.steps - e.step) / rate)}")
        else:
            parts.append("-- it/s")
        return " ".join(parts)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def resume_command(run_dir: str | Path) -> str:
    """The command that continues the run in `run_dir` (any stage: NeRF, mesh, edit), quoted for a shell."""
    return f"dream3d generate --resume {shlex.quote(str(run_dir))}"


def continue_hint(last: Event | None, run_dir: str | Path) -> str:
    """What a stop outside the training loop left behind and how to go on, in one clause.

    last: the last event of the generation (None: none yet); run_dir: the run folder it was started in.
    """
    from dream3d.run_folder import RunFolder

    run = RunFolder(last.run_dir if last is not None else run_dir)
    if last is not None and last.kind in ("export", "exported") or \
            last is not None and last.kind == "phase" and last.phase == "turntable":
        return f"the run is finished; export it again with: dream3d export {shlex.quote(str(run.path))}"
    if run.config.is_file():
        where = f"step {last.step}/{last.steps}" if last is not None and last.step else "the start"
        return f"stopped at {where}; continue with: {resume_command(run.path)}"
    return "nothing was saved yet; run the same command again"
