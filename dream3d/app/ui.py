"""The Gradio Blocks of the app: Generate, Edit and Gallery tabs over a `RunManager`.

Handlers never raise to the page: user mistakes (Dream3DError) become one red status line. Generation and
editing handlers are generators that follow a job (status, preview, loss) until it ends, then give the result
files; the Model3D viewer is filled by a chained step from the GLB file output (a Model3D value sent by a
generator's yield does not render in Gradio 6.31). Files are served from the run folders (they live under the
working directory or the temp folder) or from staged copies; `outputs/` is never an `allowed_paths` entry.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr  # this module is imported only to build the UI

from dream3d.app import forms
from dream3d.app.jobs import DONE, STOPPED, Job, RunManager
from dream3d.app.policy import PagePolicy
from dream3d.app.runs import (CAPTION_TEXT, UNREADABLE, list_runs, read_losses, read_run_safely, reserve_run_dir,
                              resolve_run)
from dream3d.app.status import error_html, info_html, job_html
from dream3d.app.worker import run_job
from dream3d.config import RunConfig
from dream3d.errors import Dream3DError, safe_text
from dream3d.run_folder import RunFolder, default_run_dir

CSS = """
.d3-status {font-size: 1rem; padding: 2px 0; min-height: 1.5em}
.d3-status progress {display: block; width: 100%; height: 14px; margin-bottom: 4px}
.d3-error {color: #c0392b; font-weight: 600}
#gallery .grid-container {grid-template-columns: repeat(auto-fill, minmax(160px, 220px)) !important;
                          grid-auto-rows: auto !important}
#gallery .thumbnail-item {aspect-ratio: 1}
"""
INTRO = """# dream3d
Text to 3D by score distillation. The bundled prior knows the shapes world: prompts like *a red cube*,
*a blue torus* (colors red, green, blue, yellow, purple, orange; shapes sphere, cube, cylinder, cone, torus, wedge).
Other priors: a Stable Diffusion / DeepFloyd IF hub id or a local diffusers folder. Runs land in the outputs folder
and keep going if you close this page; the Gallery tab reopens them."""
MAX_PLOT_POINTS = 400


@dataclass
class Panel:
    """The live view and the result view of one tab."""

    status: Any
    preview: Any
    loss: Any
    model: Any
    video: Any
    glb: Any
    obj: Any
    config: Any

    @property
    def streamed(self) -> list:
        """Outputs of the generator handlers, in the order they yield them."""
        return [self.status, self.preview, self.loss, self.glb, self.obj, self.config, self.video]


class FileServer:
    """Paths the page may show: files inside the runs folder `outputs` (a link in a run folder that leads out of
    it is not followed), those under the working directory or temp folder as they are, others as copies in a
    staging folder (so `outputs/` never needs to be in `allowed_paths`), removed by `close`."""

    def __init__(self, outputs: str | Path = "outputs") -> None:
        self.outputs = Path(outputs)
        self.roots = [Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()]
        self.staging: Path | None = None

    def __call__(self, path: Path | None) -> str | None:
        if path is None or not Path(path).is_file():
            return None
        p = Path(path).resolve()
        if not p.is_relative_to(self.outputs.resolve()):
            return None
        if any(p.is_relative_to(r) for r in self.roots):
            return str(p)
        if self.staging is None:
            self.staging = Path(tempfile.mkdtemp(prefix="dream3d-app-"))
        dest = self.staging / hashlib.sha256(str(p).encode()).hexdigest()[:16] / p.name
        if not dest.is_file() or dest.stat().st_mtime < p.stat().st_mtime:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        return str(dest)

    def close(self) -> None:
        """Remove the staged copies."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


def loss_frame(losses: list[tuple[int, float]]):
    """A (step, loss) DataFrame for the plot, thinned to at most MAX_PLOT_POINTS rows."""
    import pandas as pd

    stride = max(1, -(-len(losses) // MAX_PLOT_POINTS))
    rows = losses[::stride]
    if losses and rows[-1] != losses[-1]:
        rows = rows + [losses[-1]]
    # explicit dtypes: an empty frame would be typed as text and the plot would keep a categorical axis
    return pd.DataFrame({"step": pd.Series([r[0] for r in rows], dtype="int64"),
                         "loss": pd.Series([r[1] for r in rows], dtype="float64")})


class Handlers:
    """The page's event handlers over one runs folder, run manager and file server."""

    def __init__(self, outputs: Path, manager: RunManager, serve: FileServer, poll_seconds: float,
                 policy: PagePolicy | None = None) -> None:
        self.outputs = outputs
        self.manager = manager
        self.serve = serve
        self.poll_seconds = poll_seconds
        self.policy = policy or PagePolicy()

    @staticmethod
    def owner_of(request: gr.Request | None) -> str:
        """The page session a request comes from ("" when unknown)."""
        return getattr(request, "session_hash", None) or ""

    # --- following a job ---------------------------------------------------------------------------------------
    def follow(self, job: Job) -> Iterator[tuple]:
        """Yield (status, preview, loss, glb, obj, config, video) while the job runs, then its results."""
        serve = self.serve
        last_preview, last_n, first = None, -1, True
        while not job.done_event.is_set():
            snap = job.snapshot()
            status = job_html(job, snap, self.manager.position(job))
            preview = serve(snap["preview"]) if snap["preview"] != last_preview else gr.skip()
            loss = loss_frame(snap["loss"]) if len(snap["loss"]) != last_n else gr.skip()
            last_preview, last_n = snap["preview"], len(snap["loss"])
            results = [None] * 4 if first else [gr.skip()] * 4  # a new run clears the previous results
            first = False
            yield status, preview, loss, *results
            job.done_event.wait(self.poll_seconds)
        snap = job.snapshot()
        status = job_html(job, snap, 0)
        if not RunFolder(job.run_dir).is_run():  # failed before the run folder was written
            yield status, None, loss_frame(snap["loss"]), None, None, None, None
            return
        info = read_run_safely(job.run_dir)
        yield (status, serve(info.preview), loss_frame(snap["loss"]), serve(info.glb), serve(info.obj_zip),
               serve(info.config), serve(info.video))

    @staticmethod
    def failed(message: str) -> tuple:
        """The streamed outputs of a run that could not start: the error line and empty results."""
        return error_html(message), None, loss_frame([]), None, None, None, None

    def start(self, kind: str, cfg: RunConfig, request: gr.Request | None) -> Job:
        """Submit a job of `kind` for this page into a fresh run folder; one running job per page and kind."""
        owner = self.owner_of(request)
        if owner and self.manager.active(owner, kind):
            raise Dream3DError(f"a {'generation' if kind == 'generate' else 'edit'} from this page is still "
                               "running; stop it or wait for it to finish")
        run_dir = reserve_run_dir(default_run_dir(cfg, self.outputs).path)
        try:
            return self.manager.submit(kind, cfg, run_dir, owner=owner)
        except Dream3DError:
            run_dir.rmdir()
            raise

    # --- handlers ----------------------------------------------------------------------------------------------
    def generate(self, prompt: str | None, method: str, prior: str | None, steps: float | None, seed: float | None,
                 guidance_scale: float | None, config_text: str | None,
                 request: gr.Request = None) -> Iterator[tuple]:
        """Start a generation and stream its progress; ends with the result files (GLB, OBJ zip, config, video)."""
        try:
            cfg = forms.generate_config(prompt, method, prior, steps, seed, guidance_scale, config_text,
                                        self.policy)
            job = self.start("generate", cfg, request)
        except Dream3DError as e:
            yield self.failed(str(e))
            return
        yield from self.follow(job)

    def edit(self, source: str | None, prompt: str | None, source_prompt: str | None, steps: float | None,
             guidance_scale: float | None, config_text: str | None,
             request: gr.Request = None) -> Iterator[tuple]:
        """Start a DDS edit of a finished run and stream it like a generation."""
        try:
            if not source:
                raise Dream3DError("choose the run to edit (the list holds finished runs; refresh it if needed)")
            cfg = forms.edit_config_from_form(resolve_run(self.outputs, source), prompt, source_prompt, steps,
                                              guidance_scale, config_text, self.policy)
            job = self.start("edit", cfg, request)
        except Dream3DError as e:
            yield self.failed(str(e))
            return
        yield from self.follow(job)

    def stopper(self, kind: str) -> Callable[..., None]:
        """The Stop handler for jobs of `kind`."""
        manager, owner_of = self.manager, self.owner_of

        def stop(request: gr.Request = None) -> None:
            """Stop this page's running (or waiting) run; it keeps its checkpoint and export."""
            for job in manager.active(owner_of(request), kind):
                manager.stop(job)
        return stop

    def check_config(self, method: str, prior: str | None, steps: float | None, seed: float | None,
                     guidance_scale: float | None, config_text: str | None) -> str:
        """Validate the generation settings against the schema and the page policy (the prompt is not needed)."""
        try:
            cfg = forms.generate_config("a red cube", method, prior, steps, seed, guidance_scale, config_text,
                                        self.policy)
        except Dream3DError as e:
            return error_html(str(e))
        return info_html(f"config OK: {forms.describe(cfg)}", "ok")

    def recipe_defaults(self, method: str, prior: str = "") -> tuple[Any, Any]:
        """(steps, guidance scale) of the recipe `method` takes for `prior` (`forms.method_config`: the prior
        kind's recipe); both left as they are for an unknown method or a prior that is not offered or cannot be
        read."""
        try:
            cfg = forms.method_config(method, prior, self.policy)
        except Dream3DError:
            return gr.skip(), gr.skip()
        return cfg.steps, cfg.guidance.guidance_scale

    def refresh(self) -> tuple:
        """Gallery items, their run names, and the choices of the run pickers."""
        runs = list_runs(self.outputs)
        shown = [r for r in runs if r.thumbnail is not None]
        items = [(self.serve(r.thumbnail), r.caption) for r in shown]
        all_choices = [(f"{r.name} — {r.caption}", r.name) for r in runs]
        editable = [(f"{r.name} — {r.caption}", r.name) for r in runs
                    if r.state in (DONE, STOPPED) and r.step > 0 and r.has_checkpoint]
        return (items, [r.name for r in shown], gr.Dropdown(choices=all_choices),
                gr.Dropdown(choices=editable))

    @staticmethod
    def pick(names: list[str], evt: gr.SelectData) -> Any:
        """The run name of the clicked gallery item."""
        return names[evt.index] if evt is not None and 0 <= evt.index < len(names) else gr.skip()

    def open_run(self, name: str | None) -> tuple:
        """A past run's status, preview, loss curve, GLB (viewer and download), OBJ zip, config and turntable."""
        serve = self.serve
        if not name:
            return info_html("choose a run"), None, None, None, None, None, None, None
        try:
            run_dir = resolve_run(self.outputs, name)
        except Dream3DError as e:
            return error_html(str(e)), None, None, None, None, None, None, None
        info = read_run_safely(run_dir, name)
        if info.state == UNREADABLE:
            return (error_html(f"run {info.name} is unreadable: {info.problem}"), *[None] * 7)
        text = (f"{info.name}: {info.kind} · '{safe_text(info.prompt, CAPTION_TEXT)}' · "
                f"{safe_text(info.method, CAPTION_TEXT)} · {safe_text(info.state, CAPTION_TEXT)} at step "
                f"{info.step}/{info.steps}"
                + ("" if info.glb else " · no export yet"))
        return (info_html(text, info.state), serve(info.preview), loss_frame(read_losses(run_dir)), serve(info.glb),
                serve(info.glb), serve(info.obj_zip), serve(info.config), serve(info.video))


# --- layout ----------------------------------------------------------------------------------------------------
VIEWER_CAMERA = (45.0, 60.0, None)
"""The 3-D viewer's first view (gr.Model3D camera_position: azimuth and polar angle in degrees, radius): a
three-quarter view from 30 degrees above the horizon, between two side axes, so a cube shows three faces."""


@dataclass
class GenerateTab:
    """The inputs and buttons of the Generate tab, and its panel."""

    prompt: Any
    method: Any
    prior: Any
    steps: Any
    seed: Any
    scale: Any
    editor: Any
    check_btn: Any
    run_btn: Any
    stop_btn: Any
    panel: Panel


@dataclass
class EditTab:
    """The inputs and buttons of the Edit tab, and its panel."""

    source: Any
    refresh_btn: Any
    target: Any
    source_prompt: Any
    steps: Any
    scale: Any
    editor: Any
    edit_btn: Any
    stop_btn: Any
    panel: Panel


@dataclass
class GalleryTab:
    """The run picker, gallery and run names of the Gallery tab, and its panel."""

    choice: Any
    refresh_btn: Any
    gallery: Any
    names: Any
    panel: Panel


def panel(prefix: str) -> Panel:
    """The status line, preview, loss plot, 3-D viewer, turntable and result files; elem_ids start with `prefix`."""
    status = gr.HTML(elem_id=f"{prefix}-status")
    with gr.Row():
        preview = gr.Image(label="Preview (4 views around the object)", type="filepath", interactive=False,
                           elem_id=f"{prefix}-preview", height=200)
        loss = gr.LinePlot(x="step", y="loss", label="Loss", elem_id=f"{prefix}-loss", height=200,
                           y_axis_format=".3~s")  # short tick labels: 1.5k
    with gr.Row():
        model = gr.Model3D(label="3D model (GLB)", elem_id=f"{prefix}-model3d", clear_color=(1, 1, 1, 1),
                           height=360, camera_position=VIEWER_CAMERA)
        video = gr.Video(label="Turntable", elem_id=f"{prefix}-video", interactive=False, loop=True, height=360)
    with gr.Row():
        glb = gr.File(label="GLB", elem_id=f"{prefix}-glb", interactive=False)
        obj = gr.File(label="OBJ (zip: mesh, material, texture)", elem_id=f"{prefix}-obj", interactive=False)
        config = gr.File(label="Config (YAML)", elem_id=f"{prefix}-config", interactive=False)
    return Panel(status, preview, loss, model, video, glb, obj, config)


def generate_tab(method_names: list[str], policy: PagePolicy) -> GenerateTab:
    """The Generate tab: prompt, method, prior (the operator's offer), steps, seed, guidance scale, YAML editor,
    buttons, and its panel."""
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", placeholder="a red cube", elem_id="prompt")
                # custom values reach forms (one line for an unknown method); Gradio would quote one whole
                method = gr.Dropdown(choices=method_names, value="sds", label="Method", elem_id="method",
                                     allow_custom_value=True)
                offer = ", ".join(policy.allowed_priors)
                prior = gr.Textbox(label="Prior", placeholder="bundled (leave empty)" + (f", or one of: {offer}"
                                                                                         if offer else ""),
                                   elem_id="prior")
                with gr.Row():
                    sds_defaults = forms.method_config("sds")
                    steps = gr.Number(value=sds_defaults.steps, precision=0, label="Steps", elem_id="steps")
                    seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    scale = gr.Number(value=sds_defaults.guidance.guidance_scale, label="Guidance scale",
                                      elem_id="scale")
                with gr.Accordion("Advanced config (YAML)", open=False, elem_id="advanced"):
                    editor = gr.Code(value=forms.EDITOR_HELP, language="yaml", elem_id="config-editor")
                    check_btn = gr.Button("Check config", elem_id="check-btn", size="sm")
                with gr.Row():
                    run_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            with gr.Column(scale=2):
                gen = panel("gen")
    return GenerateTab(prompt, method, prior, steps, seed, scale, editor, check_btn, run_btn, stop_btn, gen)


def edit_tab() -> EditTab:
    """The Edit tab: run to edit, target and source prompts, steps, guidance scale, YAML editor, buttons, panel."""
    with gr.Tab("Edit", id="edit"):
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    source = gr.Dropdown(label="Run to edit (finished runs)", choices=[], scale=4,
                                         allow_custom_value=True, elem_id="edit-source")
                    edit_refresh = gr.Button("↻", elem_id="edit-refresh", scale=1, min_width=40)
                target = gr.Textbox(label="Target prompt", placeholder="a blue cube", elem_id="edit-prompt")
                source_prompt = gr.Textbox(label="Source prompt (default: the run's prompt)",
                                           elem_id="edit-source-prompt")
                with gr.Row():
                    default_steps, default_scale = forms.edit_defaults()
                    edit_steps = gr.Number(value=default_steps, precision=0, label="Steps", elem_id="edit-steps")
                    edit_scale = gr.Number(value=default_scale, label="Guidance scale", elem_id="edit-scale")
                with gr.Accordion("Advanced config (YAML)", open=False, elem_id="edit-advanced"):
                    edit_editor = gr.Code(value=forms.EDIT_EDITOR_HELP, language="yaml",
                                          elem_id="edit-config-editor")
                with gr.Row():
                    edit_btn = gr.Button("Edit", variant="primary", elem_id="edit-btn")
                    edit_stop = gr.Button("Stop", variant="stop", elem_id="edit-stop-btn")
            with gr.Column(scale=2):
                ed = panel("edit")
    return EditTab(source, edit_refresh, target, source_prompt, edit_steps, edit_scale, edit_editor, edit_btn,
                   edit_stop, ed)


def gallery_tab() -> GalleryTab:
    """The Gallery tab: run picker, refresh button, gallery of past runs (with their names as state), panel."""
    with gr.Tab("Gallery", id="gallery"):
        with gr.Row():
            choice = gr.Dropdown(label="Open a run", choices=[], allow_custom_value=True, elem_id="open-run",
                                 scale=4)
            refresh_btn = gr.Button("Refresh", elem_id="gallery-refresh", scale=1)
        gallery = gr.Gallery(label="Past runs (newest first; click one to open it)", columns=5, height="auto",
                             object_fit="contain", allow_preview=False, elem_id="gallery")
        names = gr.State([])
        shown = panel("open")
    return GalleryTab(choice, refresh_btn, gallery, names, shown)


# --- wiring ----------------------------------------------------------------------------------------------------
PRIVATE = dict(api_visibility="private")


def wire_run(button: Any, handler: Any, inputs: list, shown: Panel, api_name: str, show_model: dict,
             refresh: Any, refresh_outputs: list) -> None:
    """Chain a run button: clear the viewer, stream the run (`api_name`), show its GLB, refresh the run lists."""
    (button.click(lambda: None, outputs=shown.model, queue=False, **PRIVATE)
        .then(handler, inputs, shown.streamed, api_name=api_name, concurrency_limit=None, show_progress="hidden")
        .then(inputs=shown.glb, outputs=shown.model, **show_model)
        .then(refresh, outputs=refresh_outputs, **PRIVATE))


def wire_generate(tab: GenerateTab, h: Handlers, show_model: dict, refresh: Any, refresh_outputs: list) -> None:
    """Events of the Generate tab: generate, stop, check config, and the method's default guidance scale."""
    inputs = [tab.prompt, tab.method, tab.prior, tab.steps, tab.seed, tab.scale, tab.editor]
    wire_run(tab.run_btn, h.generate, inputs, tab.panel, "generate", show_model, refresh, refresh_outputs)
    tab.stop_btn.click(h.stopper("generate"), outputs=None, api_name="stop", concurrency_limit=None)
    tab.check_btn.click(h.check_config, [tab.method, tab.prior, tab.steps, tab.seed, tab.scale, tab.editor],
                        tab.panel.status, api_name="check_config")
    for event in (tab.method.change, tab.prior.blur, tab.prior.submit):  # the recipe follows method and prior
        event(h.recipe_defaults, [tab.method, tab.prior], [tab.steps, tab.scale], **PRIVATE)


def wire_edit(tab: EditTab, h: Handlers, show_model: dict, refresh: Any, refresh_outputs: list) -> None:
    """Events of the Edit tab: edit, stop, and refreshing the run lists."""
    inputs = [tab.source, tab.target, tab.source_prompt, tab.steps, tab.scale, tab.editor]
    wire_run(tab.edit_btn, h.edit, inputs, tab.panel, "edit", show_model, refresh, refresh_outputs)
    tab.stop_btn.click(h.stopper("edit"), outputs=None, api_name="stop_edit", concurrency_limit=None)
    tab.refresh_btn.click(refresh, outputs=refresh_outputs, **PRIVATE)


def wire_gallery(tab: GalleryTab, h: Handlers, refresh: Any, refresh_outputs: list) -> None:
    """Events of the Gallery tab: refresh, pick a run from the gallery, open the chosen run."""
    tab.refresh_btn.click(refresh, outputs=refresh_outputs, api_name="runs")
    tab.gallery.select(h.pick, tab.names, tab.choice, **PRIVATE)
    shown = tab.panel
    tab.choice.change(h.open_run, tab.choice, [shown.status, shown.preview, shown.loss, shown.model, shown.glb,
                                               shown.obj, shown.config, shown.video], api_name="open_run")


CACHE_SECONDS = 86400  # files the page was given stay in Gradio's cache this long (all removed at shutdown)


def build_app(outputs: str | Path = "outputs", manager: RunManager | None = None,
              poll_seconds: float = 0.5, policy: PagePolicy | None = None) -> gr.Blocks:
    """The Blocks (not launched). `outputs`: the runs folder; `manager`: the run manager (default: one run per
    device, 8 waiting); `policy`: offered priors and page limits (default: the bundled prior, PAGE_LIMITS)."""
    outputs = Path(outputs)
    manager = manager or RunManager(run_job)
    policy = policy or PagePolicy()
    h = Handlers(outputs, manager, FileServer(outputs), poll_seconds, policy)
    method_table = forms.methods()

    with gr.Blocks(title="dream3d", analytics_enabled=False, delete_cache=(3600, CACHE_SECONDS)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            gen = generate_tab(list(method_table), policy)
            ed = edit_tab()
            gal = gallery_tab()

        # one function object per handler, so that events of the same handler share its concurrency group
        refresh = h.refresh
        show_model = dict(fn=lambda f: f, **PRIVATE)
        refresh_outputs = [gal.gallery, gal.names, gal.choice, ed.source]
        wire_generate(gen, h, show_model, refresh, refresh_outputs)
        wire_edit(ed, h, show_model, refresh, refresh_outputs)
        wire_gallery(gal, h, refresh, refresh_outputs)
        demo.load(refresh, outputs=refresh_outputs, **PRIVATE)
    demo.run_manager = manager  # for tests and shutdown
    demo.file_server = h.serve  # its staged copies are removed at shutdown
    return demo


__all__ = ["CSS", "FileServer", "build_app", "loss_frame"]
