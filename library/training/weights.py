"""The interface of a weights strategy: what a run trains and how it is written.

Two strategies implement it: LoRA adapters on a frozen base (``lora_weights.py``) and the full UNet and text
encoders (``full_weights.py``). The class itself is the run's factory: its class-level answers decide how the base
model loads, before an instance exists; the instance is built on the loaded model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.networks import TrainingInfo
from library.training.accelerator import Precision

if TYPE_CHECKING:
    from library.networks import LoraNetwork


class TrainedWeights(ABC):
    """What a run trains (modules, optimizer groups, state hooks) and how it writes the result."""

    saves_base_model: ClassVar[bool]
    """The written file holds the base model (full fine-tuning), not adapters only."""

    trains_text_encoder: bool
    network: LoraNetwork | None = None
    """The adapters a LoRA run trains; the compare grid at the end loads each saved file into them."""

    @staticmethod
    def load_dtypes(precision: Precision) -> tuple[torch.dtype, torch.dtype]:
        """(UNet and text encoders, VAE) storage dtypes the base model loads in: fp32 unless the strategy knows
        its frozen parts can be read straight into a smaller dtype."""
        return torch.float32, torch.float32

    @abstractmethod
    def __init__(self, config: FurnaceConfig, model: BaseModel, precision: Precision, device: torch.device) -> None:
        """Set up on the loaded model: move and cast it, inject or unfreeze what trains."""

    @abstractmethod
    def modules_to_prepare(self) -> list[torch.nn.Module]:
        """The modules that train: wrapped for distributed training, and in training mode during the steps."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups, one learning rate each."""

    @abstractmethod
    def parameters(self) -> list[torch.nn.Parameter]:
        """Every trained tensor (gradient clipping)."""

    @abstractmethod
    def register_state_hooks(self, accelerator) -> None:
        """Make accelerate's saved state carry what the strategy needs to resume."""

    @abstractmethod
    def after_step(self, step: int) -> None:
        """Called after each optimizer step with the new step count."""

    @abstractmethod
    def sync_to_step(self, step: int) -> None:
        """Apply what depends on the step count (also right after a resume)."""

    @abstractmethod
    def save(self, path: Path, info: TrainingInfo) -> None:
        """Write the trained weights to ``path`` with the run's metadata."""


WeightsFactory = type[TrainedWeights]
