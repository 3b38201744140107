"""Prompt grammar of the shapes world: "a <color> <shape>" with an optional view suffix (", front view").

The bundled prior knows exactly these words; `parse_prompt` rejects anything else with a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dream3d.cameras import VIEW_SUFFIXES
from dream3d.errors import PromptError
from dream3d.shapes.primitives import COLORS, SHAPES


@dataclass(frozen=True)
class ShapePrompt:
    color: str
    shape: str
    view: str | None = None  # "front" | "side" | "back" | "overhead" | None

    def text(self) -> str:
        return make_prompt(self.color, self.shape, self.view)


def make_prompt(color: str, shape: str, view: str | None = None) -> str:
    """'a red cube' (+ ', front view' when view is given)."""
    if color not in COLORS:
        raise PromptError(f"unknown color {color!r}; known colors: {', '.join(COLORS)}")
    if shape not in SHAPES:
        raise PromptError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")
    text = f"a {color} {shape}"
    if view is not None:
        suffix = f", {view} view"
        if suffix not in VIEW_SUFFIXES:
            raise PromptError(f"unknown view {view!r}")
        text += suffix
    return text


_WORDS = re.compile(r"[a-z]+")


def parse_prompt(text: str) -> ShapePrompt:
    """Parse a shapes-world prompt; raises PromptError naming the offending word for anything else."""
    if not text or not text.strip():
        raise PromptError("the prompt is empty; try for example 'a red cube'")
    words = _WORDS.findall(text.lower())
    view = None
    if len(words) >= 2 and words[-1] == "view":
        view = words[-2]
        if f", {view} view" not in VIEW_SUFFIXES:
            raise PromptError(f"unknown view {view!r} in {text!r}")
        words = words[:-2]
    if words and words[0] in ("a", "an"):
        words = words[1:]
    colors = [w for w in words if w in COLORS]
    shapes = [w for w in words if w in SHAPES]
    unknown = [w for w in words if w not in COLORS and w not in SHAPES]
    if unknown:
        raise PromptError(
            f"the shapes prior does not know the word {unknown[0]!r}; prompts look like 'a red cube' "
            f"(colors: {', '.join(COLORS)}; shapes: {', '.join(SHAPES)})")
    if len(colors) != 1 or len(shapes) != 1:
        raise PromptError(f"a shapes-world prompt names one color and one shape, like 'a red cube'; got {text!r}")
    return ShapePrompt(colors[0], shapes[0], view)
