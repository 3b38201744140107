"""The shapes world: analytic primitives with known ground truth, their renders, and the prompt grammar."""

from dream3d.shapes.primitives import COLORS, SHAPES, occupancy, sdf, volume
from dream3d.shapes.prompts import ShapePrompt, make_prompt, parse_prompt

__all__ = ["COLORS", "SHAPES", "occupancy", "sdf", "volume", "ShapePrompt", "make_prompt", "parse_prompt"]
