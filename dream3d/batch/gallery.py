"""`index.html` in the batch folder: one card per job (thumbnail, turntable GIF, GLB/OBJ/MP4 links, time, status).

A static page with relative links, so the batch folder can be opened from disk, served by any web server, or
copied elsewhere. Only files that exist are linked. While jobs are still pending or running the page reloads
itself every 30 s.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from dream3d.fileio import write_bytes_atomic

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.3rem;margin:0 0 .3rem} .summary{color:#555;margin-bottom:1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:1rem}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.7rem}
.card.failed{border-color:#d33} .card.running{border-color:#e9a400}
.media{display:flex;gap:.4rem;min-height:128px} .media img{width:128px;height:128px;object-fit:contain;
background:#f0f0f0;border-radius:4px} .placeholder{width:128px;height:128px;display:flex;align-items:center;
justify-content:center;background:#f0f0f0;color:#999;border-radius:4px;font-size:.8rem}
.prompt{font-weight:600;margin:.5rem 0 .2rem} .meta{font-size:.85rem;color:#555}
.state{font-weight:600} .state.done{color:#1a7f37} .state.failed{color:#d33} .state.running{color:#b07d00}
.error{font-size:.8rem;color:#d33;word-break:break-word;margin-top:.3rem} .links a{margin-right:.6rem}
"""

LINKS = (("glb", "GLB"), ("obj", "OBJ"), ("turntable_mp4", "MP4"))


def _href(path: str) -> str:
    return quote(Path(path).as_posix())


def _exists(batch_dir: Path, rel: str | None) -> bool:
    return bool(rel) and (batch_dir / rel).is_file()


def _card(batch_dir: Path, e: dict) -> str:
    out = e.get("outputs") or {}
    state = e.get("state", "pending")
    esc = html.escape
    media = []
    for key, label in (("thumbnail", "thumbnail"), ("turntable_gif", "turntable")):
        rel = out.get(key)
        if _exists(batch_dir, rel):
            media.append(f'<img class="{label}" src="{_href(rel)}" alt="{label} of {esc(e["prompt"])}" '
                         f'loading="lazy">')
        else:
            media.append(f'<div class="placeholder">no {label}</div>')
    links = [f'<a href="{_href(out[k])}"{" download" if k == "glb" else ""}>{label}</a>'
             for k, label in LINKS if _exists(batch_dir, out.get(k))]
    meta = [f"seed {e.get('seed')}", esc(e.get("method") or ""), f"{e.get('step') or 0}/{e.get('steps')} steps",
            f"{float(e.get('seconds') or 0):.1f} s"]
    if e.get("resumed_from"):
        meta.append(f"resumed at step {e['resumed_from']}")
    note = e.get("error") or e.get("note") or ""
    return (f'<div class="card {esc(state)}" data-job="{esc(e["name"])}" data-state="{esc(state)}">'
            f'<div class="media">{"".join(media)}</div>'
            f'<div class="prompt">{esc(e["prompt"])}</div>'
            f'<div class="meta"><span class="state {esc(state)}">{esc(state)}</span> · {" · ".join(meta)}</div>'
            f'<div class="meta name">{esc(e["name"])}</div>'
            f'<div class="links">{"".join(links)}</div>'
            + (f'<div class="error">{esc(note)}</div>' if note else "") + "</div>")


def write_gallery(batch_dir: str | os.PathLike, manifest: dict) -> Path:
    """Write `<batch_dir>/index.html` for the manifest's jobs (atomically); returns its path."""
    batch_dir = Path(batch_dir)
    jobs = manifest.get("jobs", [])
    counts = {s: sum(1 for e in jobs if e.get("state") == s) for s in ("done", "failed", "running", "pending")}
    unfinished = counts["running"] + counts["pending"] > 0
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            + ('<meta http-equiv="refresh" content="30">' if unfinished else "")
            + f"<title>dream3d batch: {html.escape(batch_dir.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>dream3d batch: {html.escape(batch_dir.name)}</h1>"
            f'<div class="summary">{len(jobs)} jobs: {summary or "none"} · updated '
            f'{html.escape(str(manifest.get("updated", "")))} · <a href="batch.json">batch.json</a></div>'
            f'<div class="grid">{"".join(_card(batch_dir, e) for e in jobs)}</div></body></html>\n')
    path = batch_dir / "index.html"
    write_bytes_atomic(path, page.encode("utf-8"))
    return path
