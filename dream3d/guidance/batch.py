"""What a guidance method is told about the renders besides the images themselves: `GuidanceBatch`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.cameras import Cameras


@dataclass
class GuidanceBatch:
    """The conditioning and render extras of one guidance call (B = the number of renders).

    prompt: the view-independent prompt; negative_prompt: the unconditional branch's prompt ("" = empty prompt);
    cameras: the B cameras of the renders (None in 2D use); view_dependent: append `view_suffixes(cameras)` to
    the prompt, per sample; total_steps: the run's length (deterministic timestep schedules need it);
    opacity, depth: (B,1,H,W) render outputs (CFD's surface noise), depth = Σ w·t un-normalised;
    rgb_source: (B,3,H,W) in [0,1], the source scene rendered from the same cameras (DDS editing);
    source_prompt: the prompt describing that source (DDS; "" = the method's own `source_prompt`).
    """

    prompt: str
    negative_prompt: str = ""
    cameras: Cameras | None = None
    view_dependent: bool = False
    total_steps: int | None = None
    opacity: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    rgb_source: torch.Tensor | None = None
    source_prompt: str = ""
