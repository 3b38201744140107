"""Diffusion timestep sampling and annealing, shared by every guidance method.

Timesteps are given as fractions of T = num_train_timesteps and turned into integer indices with
`round(f·T)` clamped to [0, T−1]. Schedules (all called as `schedule(step, total_steps, batch, generator)`):

- "constant": t ~ U{t_min·T .. t_max·T}, independently per sample (DreamFusion).
- "step":     as constant, but the upper bound drops from t_max to t_max_end once step ≥ anneal_step
              (ProlificDreamer: 0.98 → 0.5 after 5k steps).
- "sqrt":     deterministic, t = t_max − (t_max − t_min)·√(step/total_steps) (HiFA).
- "linear":   deterministic, piecewise-linear in progress p = step/total_steps through `knots`
              ((p, t) pairs, p increasing from 0 to 1), default [(0, t_max), (1, t_min)] (CFD).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import torch

from dream3d.errors import ConfigError

SCHEDULES = ("constant", "step", "sqrt", "linear")
RANDOM_SCHEDULES = ("constant", "step")


def to_index(frac: float, num_train_timesteps: int) -> int:
    """Integer timestep for a fraction of T: round(frac·T) clamped to [0, T−1]."""
    return min(max(int(round(frac * num_train_timesteps)), 0), num_train_timesteps - 1)


def uniform_timesteps(batch: int, t_min: float, t_max: float, num_train_timesteps: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch,) int64 timesteps drawn uniformly from the integers [round(t_min·T), round(t_max·T)] (inclusive)."""
    lo, hi = to_index(t_min, num_train_timesteps), to_index(t_max, num_train_timesteps)
    return torch.randint(lo, hi + 1, (batch,), generator=generator)


def step_t_max(step: int, t_max: float, t_max_end: float, anneal_step: int) -> float:
    """Upper bound of the "step" schedule: t_max before `anneal_step`, t_max_end from it on."""
    return t_max if step < anneal_step else t_max_end


def sqrt_anneal(step: int, total_steps: int, t_min: float, t_max: float) -> float:
    """HiFA: t = t_max − (t_max − t_min)·(step/total_steps)^0.5 (fraction of T)."""
    p = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return t_max - (t_max - t_min) * p ** 0.5


def linear_anneal(step: int, total_steps: int, knots: Sequence[tuple[float, float]]) -> float:
    """Piecewise-linear t (fraction of T) at progress p = step/total_steps through knots [(p_i, t_i)]."""
    p = min(max(step / max(total_steps, 1), 0.0), 1.0)
    for (p0, t0), (p1, t1) in zip(knots[:-1], knots[1:]):
        if p <= p1:
            return t0 if p1 == p0 else t0 + (t1 - t0) * (p - p0) / (p1 - p0)
    return knots[-1][1]


@dataclass
class TimestepSchedule:
    """A timestep schedule (see module doc). Call it as `schedule(step, total_steps, batch, generator)`."""

    kind: str = "constant"
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_end: float = 0.5
    anneal_step: int = 5000
    knots: Sequence[tuple[float, float]] | None = None
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            close = difflib.get_close_matches(str(self.kind), SCHEDULES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (one of {', '.join(SCHEDULES)})"
            raise ConfigError(f"unknown timestep schedule '{self.kind}'{hint}")
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ConfigError(f"timestep range needs 0 <= t_min <= t_max <= 1, got t_min={self.t_min}, "
                              f"t_max={self.t_max}")
        if self.kind == "step" and not self.t_min <= self.t_max_end <= 1.0:
            raise ConfigError(f"t_max_end={self.t_max_end} must lie in [t_min={self.t_min}, 1]")
        if self.knots is not None:
            self.knots = [(float(p), float(t)) for p, t in self.knots]
            ps = [p for p, _ in self.knots]
            if len(ps) < 2 or ps != sorted(ps) or ps[0] != 0.0 or ps[-1] != 1.0:
                raise ConfigError("timestep knots need >= 2 (progress, t) pairs with progress increasing 0 -> 1")

    @property
    def deterministic(self) -> bool:
        """True when t depends only on the step (sqrt, linear)."""
        return self.kind not in RANDOM_SCHEDULES

    def fraction(self, step: int, total_steps: int | None) -> float:
        """The deterministic t (fraction of T) of a "sqrt"/"linear" schedule at `step`."""
        if total_steps is None:
            raise ValueError(f"the '{self.kind}' timestep schedule needs total_steps")
        if self.kind == "sqrt":
            return sqrt_anneal(step, total_steps, self.t_min, self.t_max)
        if self.kind == "linear":
            return linear_anneal(step, total_steps, self.knots or [(0.0, self.t_max), (1.0, self.t_min)])
        raise ValueError(f"the '{self.kind}' schedule is random")

    def __call__(self, step: int, total_steps: int | None, batch: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch,) int64 timesteps on the CPU for optimization step `step` of `total_steps`."""
        T = self.num_train_timesteps
        if self.kind == "constant":
            return uniform_timesteps(batch, self.t_min, self.t_max, T, generator)
        if self.kind == "step":
            return uniform_timesteps(batch, self.t_min, step_t_max(step, self.t_max, self.t_max_end,
                                                                   self.anneal_step), T, generator)
        return torch.full((batch,), to_index(self.fraction(step, total_steps), T), dtype=torch.long)
