"""Checkpoint state of guidance methods as ordinary `nn.Module` state_dicts.

Some of a method's state is neither a parameter nor a buffer of the method itself: a generator's state, LoRA
weights that live inside the prior's (shared) UNet, an optimizer's moments, a lazily created noise field.
`TensorState` lets such a module put named tensors into its state_dict next to its parameters and buffers, so
`module.state_dict()` / `module.load_state_dict()` (and `dream3d.checkpoint.module_tensors`) handle the whole
method, prefixes included, with submodules nested as usual.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def attach_shared(module: nn.Module, name: str, value: Any) -> None:
    """Set `module.<name> = value` as a plain attribute, never a submodule: for models a method uses but does not
    own (the prior, its UNet), whose weights must stay out of the method's state_dict, `parameters()` and `.to()`."""
    object.__setattr__(module, name, value)


class TensorState(nn.Module):
    """An `nn.Module` whose state_dict also carries tensors that are not its parameters or buffers.

    Subclasses return them from `state_tensors()` (names relative to the module; saved after its parameters and
    buffers, before its submodules) and take them back in `load_state_tensors(tensors)`, which receives every
    entry of a loaded state_dict under this module's prefix that no parameter, buffer or submodule claims.
    """

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The module's extra checkpoint tensors (none by default)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state_tensors` returned; entries the module does not know are an error."""
        if tensors:
            raise KeyError(f"unexpected state tensors for {type(self).__name__}: {', '.join(sorted(tensors))}")

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, value in self.state_tensors().items():
            destination[prefix + name] = value

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        claimed = set(self._parameters) | set(self._buffers)
        extra, rest = {}, {}
        for key, value in state_dict.items():
            name = key[len(prefix):]
            if name not in claimed and name.split(".", 1)[0] not in self._modules:
                extra[name] = value
            else:
                rest[key] = value
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.load_state_tensors(extra)
