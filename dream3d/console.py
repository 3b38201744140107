"""What the command-line front ends share (`dream3d` and its batch mode): quiet library loading, the word
splitting of `PROMPT key=value ...`, and the progress bar drawn from a generation's events."""

from __future__ import annotations

import os
import re
import sys

from dream3d.events import Event, EventCallback

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


def split_words(words: list[str]) -> tuple[list[str], list[str]]:
    """(free text words, key=value overrides) of a positional word list.

    >>> split_words(["a red cube", "steps=10"])
    (['a red cube'], ['steps=10'])
    """
    over = [w for w in words if _OVERRIDE.match(w)]
    return [w for w in words if not _OVERRIDE.match(w)], over


def progress_bar(label: str = "generate") -> EventCallback:
    """An event callback drawing a tqdm bar on stderr per stage (the mesh stage's is labelled "refine")."""
    from tqdm import tqdm

    state = {"bar": None}

    def on_event(e: Event) -> None:
        bar = state["bar"]
        if e.kind == "start":
            state["bar"] = tqdm(total=e.steps, initial=e.step, desc="refine" if e.stage == "mesh" else label,
                                file=sys.stderr, dynamic_ncols=True, disable=None)
        elif e.kind == "step" and bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{e.metrics.get('loss', float('nan')):.3g}", t=int(e.metrics.get("t", 0)))
        elif e.kind in ("done", "stopped") and bar is not None:
            bar.close()

    return on_event
