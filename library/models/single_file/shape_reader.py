"""Shape look-ups in one component's slice of an original-layout state dict.

Real checkpoints carry no config: architecture is read from tensor shapes and from how many numbered blocks
exist. Every look-up names the full key it needed, so a truncated or foreign file fails with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class ShapeReader:
    """Read shapes and block counts under ``prefix`` of ``state_dict``."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], prefix: str, component: str) -> None:
        self._state_dict = state_dict
        self.prefix = prefix
        self.component = component

    def missing(self, name: str) -> ValueError:
        return ValueError(
            f"checkpoint lacks the expected key {self.prefix + name!r} ({self.component}); "
            "the file is incomplete or not of the expected model family"
        )

    def has(self, name: str) -> bool:
        return self.prefix + name in self._state_dict

    def __call__(self, name: str) -> torch.Size:
        if not self.has(name):
            raise self.missing(name)
        return self._state_dict[self.prefix + name].shape

    def count(self, name: str) -> int:
        """How many numbered children ``name.0``, ``name.1``… exist; the numbering must have no gaps."""
        start = f"{self.prefix}{name}."
        indices = {
            int(head)
            for head in (key[len(start) :].split(".", 1)[0] for key in self._state_dict if key.startswith(start))
            if head.isdigit()
        }
        if not indices:
            raise self.missing(f"{name}.0.*")
        for index in range(len(indices)):
            if index not in indices:
                raise self.missing(f"{name}.{index}.*")
        return len(indices)
