"""Atomic checkpoints: tensors in safetensors, everything else in JSON (never pickle).

A checkpoint is a folder `<dir>/` with `tensors.safetensors` and `meta.json`, written to a temporary sibling and
renamed into place, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Atomically write `tensors` and JSON-serialisable `meta` to the folder `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "tensors.safetensors"))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():  # flush file contents before the rename makes them visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint folder at `path`, or the `.old` copy left by a crash during the swap, or None."""
    path = Path(path)
    for cand in (path, path.with_name(path.name + ".old")):
        if (cand / "meta.json").exists() and (cand / "tensors.safetensors").exists():
            return cand
    return None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint folder written by `save_checkpoint`."""
    found = find_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {path}")
    tensors = load_file(str(found / "tensors.safetensors"), device=str(device))
    meta = json.loads((found / "meta.json").read_text())
    return tensors, meta


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state_dict with keys prefixed `prefix.`."""
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module_tensors(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    p = prefix + "."
    module.load_state_dict({k[len(p):]: v for k, v in tensors.items() if k.startswith(p)})


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into tensors (for safetensors) and JSON metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_tensors(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict) -> None:
    state: dict[int, dict] = {}
    p = prefix + "."
    for key, v in tensors.items():
        if key.startswith(p):
            pid, name = key[len(p):].split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
