"""The optimisation loop of one generation: a run folder, checkpoints, resume, events.

A run is a folder (DESIGN.md §4): `config.yaml` (resolved), `status.json`, `metrics.jsonl`, `checkpoint/`
(safetensors + json, atomic), `previews/`, later `export/` and `turntable.mp4`. Everything random in the loop
(cameras, shading, ray jitter, occupancy updates, guidance t and ε) comes from generators whose states are
checkpointed, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from dream3d.cameras import orbit_cameras, sample_cameras
from dream3d.checkpoint import (find_checkpoint, load_checkpoint, load_module_tensors, load_optimizer_tensors,
                                module_tensors, optimizer_tensors, save_checkpoint)
from dream3d.config import RunConfig, load_config, save_config
from dream3d.errors import Dream3DError, PromptError
from dream3d.guidance.batch import GuidanceBatch
from dream3d.system import build_guidance, build_renderer, resolve_device

log = logging.getLogger("dream3d")
SHADINGS = ("albedo", "lambertian", "textureless")
Event = dict
EventCallback = Callable[[Event], None]


def slugify(text: str, max_len: int = 40) -> str:
    """A safe folder-name fragment: lowercase letters, digits and '-', bounded length, never empty."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "run"


def default_run_dir(cfg: RunConfig, root: str | Path = "outputs") -> Path:
    """outputs/<prompt-slug>-s<seed>-<UTC timestamp>, or outputs/<name> when the config names the run."""
    if cfg.name:
        return Path(root) / slugify(cfg.name, 80)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{slugify(cfg.prompt)}-s{cfg.seed}-{stamp}"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def save_image(rgb: torch.Tensor, path: Path) -> None:
    """(B,3,H,W) in [0,1] -> one PNG, images side by side."""
    arr = rgb.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    Image.fromarray((np.concatenate(list(arr), axis=1) * 255).round().astype(np.uint8)).save(path)


class Trainer:
    """Runs (or resumes) the generation described by `cfg` in `run_dir`.

    events: optional callback receiving dicts {"type": "start"|"step"|"preview"|"checkpoint"|"done"|"stopped",
    "step", "steps", ...}; the CLI draws a progress bar from them, the app previews.
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, prior=None, events: EventCallback | None = None):
        if not cfg.prompt or not cfg.prompt.strip():
            raise PromptError("the prompt is empty; try for example 'a red cube'")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.events = events or (lambda e: None)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        if prior is None:
            from dream3d.priors import load_prior
            prior = load_prior(cfg.prior or None, device=self.device)
        self.prior = prior
        if hasattr(prior, "check_prompt") and getattr(prior, "strict_vocabulary", False):
            prior.check_prompt(cfg.prompt)
        self.renderer = build_renderer(cfg).to(self.device)
        self.source_renderer = self._edit_source() if cfg.edit_source else None
        self.guidance = build_guidance(cfg, prior)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self.stop_reason = ""

    # --- setup -------------------------------------------------------------------------------------------------
    def _edit_source(self):
        """Editing: a frozen copy of the source run's scene; the edited scene starts from the same weights."""
        from dream3d.export_run import load_run_renderer

        _, source = load_run_renderer(self.cfg.edit_source, str(self.device))
        source.requires_grad_(False)
        self.renderer.load_state_dict(source.state_dict())
        return source

    def _init_mesh_stage(self) -> None:
        """Mesh stage, fresh run: DMTet sdf and albedo from the NeRF run `cfg.init_from` (init.json records it)."""
        from dream3d.geometry.nerf_to_dmtet import init_from_run

        m = self.cfg.mesh
        stats = init_from_run(self.renderer, self.cfg.init_from, m.albedo_fit_steps, m.carve_views,
                              m.carve_resolution, self.cfg.seed)
        write_json_atomic(self.run_dir / "init.json", stats)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        geo = self.renderer.geometry
        if hasattr(geo, "param_groups"):  # DMTet: own learning rates for sdf and deformation
            m = self.cfg.mesh
            groups = geo.param_groups(o.lr, m.sdf_lr, m.deform_lr, o.lr * o.encoding_lr_multiplier)
        else:
            groups = [{"params": list(geo.encoding.parameters()), "lr": o.lr * o.encoding_lr_multiplier}]
        ids = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in self.renderer.parameters() if p.requires_grad and id(p) not in ids]
        rest += self.guidance.optimized_parameters()
        groups.append({"params": rest, "lr": o.lr})
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)

    # --- checkpoints -------------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def save(self) -> None:
        """Atomic checkpoint of everything a resume needs."""
        tensors = {**module_tensors("renderer", self.renderer)}
        opt_t, opt_meta = optimizer_tensors("optimizer", self.optimizer)
        tensors.update(opt_t)
        tensors.update(module_tensors("guidance", self.guidance))
        tensors["trainer.rng_state"] = self.generator.get_state()
        save_checkpoint(self.checkpoint_dir, tensors, {"step": self.step, "seconds": self.seconds,
                                                       "optimizer": opt_meta, "prompt": self.cfg.prompt})
        self.events({"type": "checkpoint", "step": self.step, "steps": self.cfg.steps})

    def load(self) -> bool:
        """Restore the latest checkpoint of the run folder, if any; returns whether one was found."""
        if find_checkpoint(self.checkpoint_dir) is None:
            return False
        tensors, meta = load_checkpoint(self.checkpoint_dir)
        load_module_tensors("renderer", self.renderer, tensors)
        self.renderer.to(self.device)
        load_optimizer_tensors("optimizer", self.optimizer, tensors, meta["optimizer"])
        load_module_tensors("guidance", self.guidance, tensors)
        self.generator.set_state(tensors["trainer.rng_state"].to(torch.uint8))
        self.step, self.seconds = int(meta["step"]), float(meta.get("seconds", 0.0))
        return True

    # --- status ------------------------------------------------------------------------------------------------
    def write_status(self, state: str, **extra) -> None:
        data = {"state": state, "step": self.step, "steps": self.cfg.steps, "prompt": self.cfg.prompt,
                "method": self.cfg.guidance.method, "seconds": round(self.seconds, 2),
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
        write_json_atomic(self.run_dir / "status.json", data)

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

    def train_step(self) -> dict:
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
        batch = GuidanceBatch(prompt=cfg.prompt, negative_prompt=cfg.guidance.negative_prompt, cameras=cams,
                              view_dependent=cfg.guidance.view_dependent, total_steps=cfg.steps,
                              opacity=out["opacity"], depth=out["depth"])
        if self.source_renderer is not None:  # DDS: the source scene from the same cameras and shading
            with torch.no_grad():
                gen = torch.Generator().set_state(jitter_state)
                batch.rgb_source = self.source_renderer(cams, r.height, r.width, shading=shading, generator=gen,
                                                        stratified=True)["rgb"]
        gout = self.guidance(out["rgb"], batch, self.step)
        loss = gout.loss
        opacity = out["opacity"].clamp(1e-5, 1 - 1e-5)
        extra = {}
        if cfg.loss.opacity_sparsity > 0:
            extra["sparsity"] = cfg.loss.opacity_sparsity * opacity.mean()
        if cfg.loss.opacity_entropy > 0:
            ent = -(opacity * opacity.log() + (1 - opacity) * (1 - opacity).log()).mean()
            extra["entropy"] = cfg.loss.opacity_entropy * ent
        if cfg.loss.orientation > 0 and "orient" in out:
            extra["orientation"] = cfg.loss.orientation * out["orient"].mean()
        if "regularizer" in out:  # the mesh stage's weighted mesh regularisers
            extra["mesh_reg"] = out["regularizer"]
        for v in extra.values():
            loss = loss + v
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        info = {k: float(v) for k, v in gout.info.items()}
        info.update({k: float(v.detach()) for k, v in extra.items()})
        info.update(shading=SHADINGS.index(shading), opacity=float(out["opacity"].detach().mean()),
                    n_samples=int(out.get("n_samples", 0)))
        if hasattr(self.renderer, "occupancy"):
            info["occupied"] = self.renderer.occupancy.occupied_fraction
        if "n_faces" in out:
            info["faces"] = out["n_faces"]
        if not np.isfinite(info.get("loss", 0.0)):
            raise Dream3DError(f"the loss became NaN/inf at step {self.step}; try a lower optim.lr")
        return info

    @torch.no_grad()
    def preview(self, n_views: int = 4, size: int = 64, shading: str = "lambertian") -> Path:
        """Render n_views around the object into previews/step_<6-digit step>.png; returns the path."""
        self.renderer.eval()
        cams = orbit_cameras(n_views, elevation_deg=20.0).to(self.device)
        out = self.renderer.render_chunked(cams, size, size, shading=shading)
        path = self.run_dir / "previews" / f"step_{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(out["rgb"], path)
        self.events({"type": "preview", "step": self.step, "steps": self.cfg.steps, "path": str(path)})
        return path

    # --- the loop ----------------------------------------------------------------------------------------------
    def train(self, handle_signals: bool = True) -> str:
        """Run until cfg.steps (or a stop request). Returns the final state: "done" or "stopped"."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "config.yaml")
        resumed = self.load()
        if not resumed and self.cfg.stage == "mesh":
            self._init_mesh_stage()
        old = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda s, f: self.request_stop(signal.Signals(s).name))
        self.events({"type": "start", "step": self.step, "steps": self.cfg.steps, "resumed": resumed,
                     "run_dir": str(self.run_dir), "stage": self.cfg.stage})
        self.write_status("running")
        state = "done"
        try:
            with open(self.run_dir / "metrics.jsonl", "a") as metrics:
                while self.step < self.cfg.steps:
                    if self._stop.is_set():
                        state = "stopped"
                        break
                    t0 = time.time()
                    info = self.train_step()
                    self.step += 1
                    self.seconds += time.time() - t0
                    metrics.write(json.dumps({"step": self.step, "seconds": round(self.seconds, 3), **info}) + "\n")
                    metrics.flush()
                    self.events({"type": "step", "step": self.step, "steps": self.cfg.steps, **info})
                    if self.step % self.cfg.checkpoint_every == 0 and self.step < self.cfg.steps:
                        self.save()
                        self.write_status("running")
                    if self.step % self.cfg.preview_every == 0 or self.step == self.cfg.steps:
                        self.preview()
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
        self.events({"type": state, "step": self.step, "steps": self.cfg.steps, "run_dir": str(self.run_dir)})
        return state


def train_stages(cfg: RunConfig, run_dir: str | Path, prior=None, events: EventCallback | None = None,
                 on_trainer: Callable[[Trainer], None] | None = None, handle_signals: bool = True) -> tuple[str, Trainer]:
    """Train (or resume) a run, and when it is the finished NeRF stage of a two-stage recipe
    (`mesh.refine_steps` > 0) go on with its mesh stage in `<run>-mesh` (resumed there too).

    on_trainer: called with each stage's Trainer before it trains (to stop it, or to follow its run folder).
    Returns the last stage's state ("done" | "stopped") and Trainer; export that one.
    """
    trainer = Trainer(cfg, run_dir, prior=prior, events=events)
    if on_trainer is not None:
        on_trainer(trainer)
    state = trainer.train(handle_signals=handle_signals)
    if state == "done" and cfg.stage == "nerf" and cfg.mesh.refine_steps > 0:
        from dream3d.refine import mesh_run_dir, mesh_stage_config

        return train_stages(mesh_stage_config(run_dir), mesh_run_dir(run_dir), trainer.prior if not cfg.prior else None,
                            events, on_trainer, handle_signals)
    return state, trainer


def resume_config(run_dir: str | Path) -> RunConfig:
    """The config a run was started with (its `config.yaml`)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise Dream3DError(f"{run_dir} is not a dream3d run folder (no config.yaml)")
    return load_config(path)
