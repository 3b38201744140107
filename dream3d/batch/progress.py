"""The live terminal view of a batch (rich): totals, throughput, and a row per running / failed / done job.

On a terminal the table redraws in place on stderr; otherwise (logs, CI) one line is printed per state change.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MAX_ROWS = 20
ORDER = {"running": 0, "failed": 1, "pending": 2, "done": 3}


class LiveTable:
    """Shows `entries` (name -> manifest entry, updated by the caller) while the batch runs."""

    def __init__(self, entries: dict[str, dict], stream: TextIO = sys.stderr, live: bool | None = None):
        self.entries = entries
        self.stream = stream
        self.phase: dict[str, str] = {}
        self.t0 = time.time()
        self.done_here = 0
        self._live = None
        self._width = 100
        self._use_live = stream.isatty() if live is None else live

    def __enter__(self) -> "LiveTable":
        if self._use_live:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                self._use_live = False
            else:
                console = Console(file=self.stream)
                self._width = console.width
                self._live = Live(self.render(self._width), console=console, refresh_per_second=2,
                                  transient=False)
                self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.render(self._width))
            self._live.__exit__(*exc)
            self._live = None

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in ORDER}
        for e in self.entries.values():
            c[e["state"]] = c.get(e["state"], 0) + 1
        return c

    def summary(self) -> str:
        c = self.counts()
        minutes = (time.time() - self.t0) / 60.0
        rate = f", {self.done_here / minutes:.2f} jobs/min" if self.done_here and minutes > 0 else ""
        return (f"{len(self.entries)} jobs: {c['done']} done, {c['failed']} failed, {c['running']} running, "
                f"{c['pending']} pending{rate}")

    def render(self, width: int = 100):
        """The table for a terminal `width` characters wide (rich)."""
        from rich.table import Table

        table = Table(title=self.summary(), title_justify="left", expand=False)
        job_w = min(44, max([len(n) for n in self.entries] + [3]))
        table.add_column("job", overflow="ellipsis", no_wrap=True, min_width=job_w, max_width=job_w)
        for col, w in (("state", 7), ("step", 12), ("time", 6)):
            table.add_column(col, no_wrap=True, min_width=w, max_width=w)
        note_w = max(10, width - job_w - 7 - 12 - 6 - 16)  # 16: borders and padding
        table.add_column("error / note", overflow="ellipsis", no_wrap=True, max_width=note_w)
        by_state = {s: [e for e in self.entries.values() if e["state"] == s] for s in ("running", "failed", "done")}
        rows = (sorted(by_state["running"], key=lambda e: e.get("index", 0))
                + sorted(by_state["failed"], key=lambda e: e.get("index", 0))
                + sorted(by_state["done"], key=lambda e: e.get("finished") or "", reverse=True))
        for e in rows[:MAX_ROWS]:
            phase = self.phase.get(e["name"], "")
            step = f"{e.get('step') or 0}/{e.get('steps') or '?'}" + (f" {phase}" if phase and e["state"] ==
                                                                     "running" else "")
            style = {"failed": "red", "done": "green", "running": "yellow"}.get(e["state"], "")
            table.add_row(e["name"], f"[{style}]{e['state']}[/]" if style else e["state"], step,
                          f"{e.get('seconds') or 0:.0f} s", e.get("error") or e.get("note") or "")
        return table

    def update(self, name: str | None = None, changed_state: bool = False) -> None:
        """Redraw (live) or print one line for a job whose state changed (plain)."""
        if self._live is not None:
            self._live.update(self.render(self._width))
        elif changed_state and name is not None:
            e = self.entries[name]
            detail = e.get("error") or e.get("note") or (f"{e.get('seconds', 0):.1f} s" if e["state"] == "done"
                                                        else "")
            print(f"[{self.summary()}] {e['state']}: {name}" + (f" ({detail})" if detail else ""),
                  file=self.stream, flush=True)
