"""Score-distillation guidance methods and the pieces they share (timesteps, weighting, CFG, loss trick).

The methods are found through `dream3d.guidance.registry` (each method's file registers itself); the imports
below only re-export the current classes.
"""

from __future__ import annotations

from dream3d.guidance.base import Guidance, GuidanceOut
from dream3d.guidance.batch import GuidanceBatch
from dream3d.guidance.cfd import CFDGuidance
from dream3d.guidance.cfg import cfg_combine, predict_branches
from dream3d.guidance.dds import DDSGuidance
from dream3d.guidance.loss import grad_loss, prepare_grad, scheduled_value
from dream3d.guidance.nfsd import NFSDGuidance
from dream3d.guidance.sds import SDSGuidance
from dream3d.guidance.ssd import SSDGuidance
from dream3d.guidance.timesteps import TimestepSchedule
from dream3d.guidance.vsd import VSDGuidance
from dream3d.guidance.weighting import WEIGHTINGS, weight

__all__ = ["CFDGuidance", "DDSGuidance", "Guidance", "GuidanceBatch", "GuidanceOut", "NFSDGuidance", "SDSGuidance",
           "SSDGuidance", "VSDGuidance", "TimestepSchedule", "WEIGHTINGS", "cfg_combine",
           "grad_loss", "predict_branches", "prepare_grad", "scheduled_value", "weight"]
