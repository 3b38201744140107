"""Shared fixtures, and a guard: the tests write only into temporary folders, never into the checkout's outputs/."""

from pathlib import Path

import pytest

from dream3d.priors.prior import Prior
from tiny_models import save_tiny_bundled, save_tiny_if, save_tiny_sd


@pytest.fixture(scope="module")  # per module: VSD adds adapters to the UNet
def tiny_priors(tmp_path_factory):
    """Tiny random SD-style (v-prediction), IF-style and bundled-style priors, saved and reloaded."""
    root = tmp_path_factory.mktemp("tiny_priors")
    return {"sd": Prior.from_pretrained(save_tiny_sd(root / "sd", prediction_type="v_prediction")),
            "if": Prior.from_pretrained(save_tiny_if(root / "if")),
            "bundled": Prior.from_pretrained(save_tiny_bundled(root / "bundled"))}


OUTPUTS = Path(__file__).resolve().parents[1] / "outputs"


@pytest.fixture(scope="session", autouse=True)
def outputs_left_alone():
    """Fails the session when a test added anything to the checkout's outputs/ (use tmp_path and --out)."""
    before = set(OUTPUTS.iterdir()) if OUTPUTS.is_dir() else set()
    yield
    added = (set(OUTPUTS.iterdir()) if OUTPUTS.is_dir() else set()) - before
    assert not added, f"tests wrote into {OUTPUTS}: {sorted(p.name for p in added)}"
