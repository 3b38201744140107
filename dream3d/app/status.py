"""The status line of a run as HTML (progress bar, step count, ETA, loss, queue position, errors). No gradio."""

from __future__ import annotations

import html
import time

from dream3d.app.jobs import DONE, EXPORTING, FAILED, RUNNING, STARTING, STOPPED, WAITING, Job


def duration(seconds: float | None) -> str:
    """'1:05' / '1:02:03' for a duration in seconds; '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def error_html(message: str) -> str:
    """A user mistake as one red line."""
    return f'<div class="d3-status d3-error" data-state="error">Error: {html.escape(message)}</div>'


def info_html(message: str, state: str = "info") -> str:
    return f'<div class="d3-status" data-state="{html.escape(state)}">{html.escape(message)}</div>'


def job_html(job: Job, snap: dict, position: int) -> str:
    """The live status of a job: waiting position, loading, progress bar with step/ETA/loss, end state."""
    state, step, steps = snap["state"], snap["step"], max(snap["steps"], 1)
    bar = f'<progress value="{step}" max="{steps}"></progress>'
    loss = f" · loss {snap['loss'][-1][1]:.4g}" if snap["loss"] else ""
    if state == WAITING:
        ahead = position - 1
        text = ("waiting in line: next; it starts when the run on the device ends" if ahead <= 0 else
                f"waiting in line: {ahead} run{'s wait' if ahead != 1 else ' waits'} ahead of this one; "
                "it starts when the device is free")
        return info_html(text, "queued")
    if state == STARTING:
        return info_html(f"starting: {snap.get('phase') or 'loading the prior and building the scene'}…", "starting")
    if state == RUNNING:
        elapsed = time.time() - job.started if job.started else 0.0
        stopping = " · stopping after this step…" if job.stop_requested.is_set() else ""
        phase = f" · {snap['phase']}…" if snap.get("phase") else ""
        text = (f"step {step}/{steps} · {duration(elapsed)} elapsed · ETA {duration(job.eta_seconds())}"
                f"{loss}{phase}{stopping}")
        return f'<div class="d3-status" data-state="running">{bar}<span>{html.escape(text)}</span></div>'
    if state == EXPORTING:
        text = f"step {step}/{steps}{loss} · exporting the mesh (GLB, OBJ) and the turntable video…"
        return f'<div class="d3-status" data-state="exporting">{bar}<span>{html.escape(text)}</span></div>'
    took = duration((job.finished or time.time()) - job.submitted)
    if state == DONE:
        text = f"done: {step}/{steps} steps{loss} · {took} in all · run {job.run_dir.name}"
        return f'<div class="d3-status" data-state="done">{bar}<span>{html.escape(text)}</span></div>'
    if state == STOPPED:
        what = (job.message or f"stopped at step {step}/{steps}")
        kept = "; checkpoint and export of the state reached kept" if step > 0 else ""
        text = f"{what}{kept} · run {job.run_dir.name}"
        return f'<div class="d3-status" data-state="stopped">{bar}<span>{html.escape(text)}</span></div>'
    if state == FAILED:
        return error_html(snap["error"] or "the run failed")
    return info_html(f"{state} · run {job.run_dir.name}")
