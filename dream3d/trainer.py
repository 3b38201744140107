"""The optimisation loop of one stage in one run folder: optimizers, schedules, checkpoints, resume, events.

Everything random in the loop (cameras, shading, ray jitter, occupancy updates, guidance t and ε) comes from
generators whose states are checkpointed, so a resumed run continues exactly as an uninterrupted one. A stop
request (signal, the app's Stop, batch's interrupt) ends the loop after the current step with a checkpoint.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from dream3d.cameras import orbit_cameras, sample_cameras
from dream3d.checkpoint import (load_checkpoint, load_module_tensors, load_optimizer_tensors, module_tensors,
                                optimizer_tensors, save_checkpoint)
from dream3d.config import RunConfig, validate_run
from dream3d.errors import Dream3DError, DivergedError, PromptError
from dream3d.events import Event, EventCallback, ignore_events
from dream3d.fileio import save_image, write_json_atomic
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.loss import scheduled_value
from dream3d.priors.protocol import DiffusionPrior
from dream3d.render.output import RenderOut
from dream3d.run_folder import RunFolder
from dream3d.stages import get_stage
from dream3d.system import build_guidance, resolve_device

SHADINGS = ("albedo", "lambertian", "textureless")


class Trainer:
    """Runs (or resumes) the stage described by `cfg` in the run folder `run`.

    prior: the loaded prior to use (None: load `cfg.prior`). events: receives the `Event`s of the stage (start,
    step, preview, checkpoint, done | stopped). preview_seconds: besides every `preview_every` steps, render a
    preview when this many seconds have passed since the last one (0: off), so that a live view refreshes
    whatever the step time.

    Example:
        >>> trainer = Trainer(load_config(None, ["steps=10"]), "outputs/demo")
        >>> trainer.train()
        'done'
    """

    def __init__(self, cfg: RunConfig, run: RunFolder | str | Path, prior: DiffusionPrior | None = None,
                 events: EventCallback | None = None, preview_seconds: float = 0.0):
        if not cfg.prompt or not cfg.prompt.strip():
            raise PromptError("the prompt is empty; try for example 'a red cube'")
        validate_run(cfg)
        self.cfg = cfg
        self.run = run if isinstance(run, RunFolder) else RunFolder(run)
        self.stage = get_stage(cfg.stage)
        self.events = events or ignore_events
        self.preview_seconds = float(preview_seconds)
        self._last_preview = time.monotonic()
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        if prior is None:
            from dream3d.priors import load_prior
            self.events(Event("phase", 0, cfg.steps, self.run.path, stage=cfg.stage, phase="prior"))
            prior = load_prior(cfg.prior or None, device=self.device, memory=cfg.prior_memory)
        self.prior = prior
        prior.check_prompt(cfg.prompt)  # too many tokens (every prior), unknown words (strict ones)
        self.renderer = self.stage.build_renderer(cfg).to(self.device)
        self.source_renderer = self._edit_source() if cfg.edit_source else None
        self.guidance = build_guidance(cfg, prior)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.saved_step = 0  # the step of the checkpoint on disk (0: none)
        self.seconds = 0.0
        self._stop = threading.Event()
        self.stop_reason = ""

    @property
    def run_dir(self) -> Path:
        return self.run.path

    # --- setup -------------------------------------------------------------------------------------------------
    def _edit_source(self):
        """Editing: a frozen copy of the source run's scene; the edited scene starts from the same weights."""
        _, source = RunFolder(self.cfg.edit_source).load_renderer(str(self.device))
        source.requires_grad_(False)
        self.renderer.load_state_dict(source.state_dict())
        return source

    def _initialize_from_source(self) -> None:
        """A fresh run of a stage that starts from another run (the mesh stage from its NeRF run `init_from`):
        the stage initialises the renderer from the source's, and init.json records how."""
        source_cfg, source = RunFolder(self.cfg.init_from).load_renderer(str(self.device))
        if source_cfg.stage != self.stage.starts_from:
            raise Dream3DError(f"{self.cfg.init_from} is a {source_cfg.stage} run; the {self.stage.name} stage "
                              f"starts from a {self.stage.starts_from} run")
        write_json_atomic(self.run.init_record, self.stage.initialize(self.renderer, source, self.cfg))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        groups = self.stage.param_groups(self.renderer, self.cfg)
        ids = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in self.renderer.parameters() if p.requires_grad and id(p) not in ids]
        rest += list(self.guidance.optimized_parameters())
        groups.append({"params": rest, "lr": o.lr})
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)

    # --- checkpoints -------------------------------------------------------------------------------------------
    def save(self) -> None:
        """Atomic checkpoint of everything a resume needs."""
        tensors = module_tensors("renderer", self.renderer)
        opt_t, opt_meta = optimizer_tensors("optimizer", self.optimizer)
        tensors.update(opt_t)
        tensors.update(module_tensors("guidance", self.guidance))
        tensors["trainer.rng_state"] = self.generator.get_state()
        save_checkpoint(self.run.checkpoint, tensors, {"step": self.step, "seconds": self.seconds,
                                                       "optimizer": opt_meta, "prompt": self.cfg.prompt})
        self.saved_step = self.step
        self._emit("checkpoint")

    def load(self) -> bool:
        """Restore the latest checkpoint of the run folder, if any; returns whether one was found."""
        if not self.run.has_checkpoint():
            return False
        tensors, meta = load_checkpoint(self.run.checkpoint)
        load_module_tensors("renderer", self.renderer, tensors, source=self.run.checkpoint)
        self.renderer.to(self.device)
        load_optimizer_tensors("optimizer", self.optimizer, tensors, meta.get("optimizer"),
                               source=self.run.checkpoint)
        load_module_tensors("guidance", self.guidance, tensors, source=self.run.checkpoint)
        self.generator.set_state(tensors["trainer.rng_state"].to(torch.uint8))
        self.step, self.seconds = int(meta["step"]), float(meta.get("seconds", 0.0))
        self.saved_step = self.step
        return True

    # --- status and events -------------------------------------------------------------------------------------
    def write_status(self, state: str, **extra) -> None:
        self.run.write_status(state, step=self.step, steps=self.cfg.steps, prompt=self.cfg.prompt,
                              method=self.cfg.guidance.method, stage=self.cfg.stage,
                              seconds=round(self.seconds, 2), **extra)

    def _emit(self, kind: str, **fields) -> None:
        self.events(Event(kind=kind, step=self.step, steps=self.cfg.steps, run_dir=self.run.path,
                          stage=self.cfg.stage, **fields))

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the loop to stop after the current step (thread-safe; used by signals and the app's Stop)."""
        self.stop_reason = reason
        self._stop.set()

    # --- one step ----------------------------------------------------------------------------------------------
    def _pick_shading(self) -> str:
        if self.step < self.cfg.render.shading_warmup_steps:
            return "albedo"
        probs = torch.tensor(self.cfg.render.shading_probs, dtype=torch.float64)
        return SHADINGS[int(torch.multinomial(probs / probs.sum(), 1, generator=self.generator))]

    def _guidance_batch(self, cams, out: RenderOut, shading: str, jitter_state: torch.Tensor) -> GuidanceBatch:
        """What the guidance needs besides the render: prompts, cameras, depth/opacity (CFD), and for editing
        the source scene rendered from the same cameras with the same shading and ray jitter (DDS)."""
        cfg, r = self.cfg, self.cfg.render
        rgb_source = None
        if self.source_renderer is not None:
            with torch.no_grad():
                gen = torch.Generator().set_state(jitter_state)
                rgb_source = self.source_renderer(cams, r.height, r.width, shading=shading, generator=gen,
                                                  stratified=True).rgb
        return GuidanceBatch(prompt=cfg.prompt, negative_prompt=cfg.guidance.negative_prompt, cameras=cams,
                             view_dependent=cfg.guidance.view_dependent, total_steps=cfg.steps,
                             opacity=out.opacity, depth=out.depth, rgb_source=rgb_source)

    def _regularizers(self, out: RenderOut) -> dict[str, torch.Tensor]:
        """The weighted loss terms besides the guidance: opacity sparsity and entropy, orientation, and the
        renderer's own (the mesh stage's)."""
        loss_cfg = self.cfg.loss
        opacity = out.opacity.clamp(1e-5, 1 - 1e-5)
        extra = {}
        if loss_cfg.opacity_sparsity > 0:
            extra["sparsity"] = loss_cfg.opacity_sparsity * opacity.mean()
        if loss_cfg.opacity_entropy > 0:
            ent = -(opacity * opacity.log() + (1 - opacity) * (1 - opacity).log()).mean()
            extra["entropy"] = loss_cfg.opacity_entropy * ent
        orientation = scheduled_value(loss_cfg.orientation_ramp or loss_cfg.orientation, self.step)
        if orientation > 0 and out.orient is not None:
            extra["orientation"] = orientation * out.orient.mean()
        if out.regularizer is not None:
            extra["mesh_reg"] = out.regularizer
        return extra

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns its metrics (floats)."""
        cfg, r = self.cfg, self.cfg.render
        self.renderer.train()
        occ_state = self.generator.get_state()
        self.renderer.update_occupancy(self.step, self.generator)
        if self.source_renderer is not None:  # same update (same points) on the frozen source's grid
            self.source_renderer.update_occupancy(self.step, torch.Generator().set_state(occ_state))
        c = cfg.camera
        cams = sample_cameras(r.batch_size, self.generator, tuple(c.elevation_range), tuple(c.azimuth_range),
                              tuple(c.distance_range), tuple(c.fov_range)).to(self.device)
        shading = self._pick_shading()
        jitter_state = self.generator.get_state()  # the source render (editing) reuses the same ray jitter
        out = self.renderer(cams, r.height, r.width, shading=shading, generator=self.generator)
        gout = self.guidance(out.rgb, self._guidance_batch(cams, out, shading, jitter_state), self.step)
        extra = self._regularizers(out)
        loss = gout.loss
        for v in extra.values():
            loss = loss + v
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        stage_info = self.stage.after_step(self.renderer, self.optimizer, cfg, self.step + 1, self.generator)
        info = {k: float(v) for k, v in gout.info.items()}
        info.update({k: float(v) for k, v in stage_info.items()})
        info.update({k: float(v.detach()) for k, v in extra.items()})
        info.update(shading=SHADINGS.index(shading), opacity=float(out.opacity.detach().mean()),
                    n_samples=out.n_samples, **self.renderer.stats())
        if out.n_faces:
            info["faces"] = out.n_faces
        if not np.isfinite(info.get("loss", 0.0)):
            kept = f"the checkpoint of step {self.saved_step} is kept" if self.saved_step else "no checkpoint yet"
            raise DivergedError(f"the loss became NaN/inf at step {self.step + 1} ({kept}); try a lower optim.lr, "
                                "a lower guidance.guidance_scale or guidance.grad_clip")
        return info

    @torch.no_grad()
    def preview(self, n_views: int = 4, size: int = 64, shading: str = "lambertian") -> Path:
        """Render n_views around the object into the run's preview for this step; returns the path."""
        self.renderer.eval()
        cams = orbit_cameras(n_views, elevation_deg=20.0).to(self.device)
        out = self.renderer.render_chunked(cams, size, size, shading=shading)
        path = self.run.preview_path(self.step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(out.rgb, path)
        self._last_preview = time.monotonic()
        self._emit("preview", path=path)
        return path

    # --- the loop ----------------------------------------------------------------------------------------------
    def _begin(self) -> bool:
        """Write the config, restore the checkpoint or initialise a fresh run; returns whether it resumed."""
        self.run.write_config(self.cfg)
        resumed = self.load()
        if not resumed and self.stage.starts_from is not None:
            self._emit("phase", phase=f"{self.stage.name}_init")
            self._initialize_from_source()
        return resumed

    def _loop(self) -> str:
        """Steps until cfg.steps or a stop request; returns "done" or "stopped"."""
        cfg = self.cfg
        if self.step < cfg.steps and not self._stop.is_set():
            self._emit("phase", phase="first_step")
        with open(self.run.metrics, "a") as metrics:
            while self.step < cfg.steps:
                if self._stop.is_set():
                    return "stopped"
                t0 = time.time()
                info = self.train_step()
                self.step += 1
                self.seconds += time.time() - t0
                metrics.write(json.dumps({"step": self.step, "seconds": round(self.seconds, 3), **info}) + "\n")
                metrics.flush()
                self._emit("step", metrics=info)
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                    self.write_status("running")
                if self.step % cfg.preview_every == 0 or self.step == cfg.steps or self._preview_due():
                    self.preview()
        return "done"

    def _preview_due(self) -> bool:
        return self.preview_seconds > 0 and time.monotonic() - self._last_preview >= self.preview_seconds

    def train(self, handle_signals: bool = True) -> str:
        """Run until cfg.steps (or a stop request). Returns the final state: "done" or "stopped".

        handle_signals: in the main thread, SIGINT and SIGTERM request a stop (restored afterwards).
        """
        resumed = self._begin()
        old = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda s, f: self.request_stop(signal.Signals(s).name))
        self._emit("start", resumed=resumed)
        self.write_status("running")
        try:
            state = self._loop()
            self.save()
            if state == "stopped":
                self.preview()
        except BaseException as e:
            self.write_status("failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
        self.write_status(state, **({"reason": self.stop_reason} if state == "stopped" else {}))
        self._emit(state)
        return state
