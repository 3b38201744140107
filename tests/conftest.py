"""Shared fixtures."""

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
