"""The interface of a weights strategy: what a run trains and how it is written.

Two strategies implement it: LoRA adapters on a frozen base (``lora_weights.py``) and the full UNet and text
encoders (``full_weights.py``). The class itself is the run's factory: its class-level answers decide how the base
model loads, before an instance exists; the instance is built on the loaded model.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.networks import TrainingInfo
from library.training.accelerator import Precision
from library.training.ema import EmaSettings, ExponentialMovingAverage, ema_settings
from library.training.run_files import raw_name

if TYPE_CHECKING:
    from library.networks import LoraNetwork


class TrainedWeights(ABC):
    """What a run trains (modules, optimizer groups, state hooks) and how it writes the result."""

    saves_base_model: ClassVar[bool]
    """The written file holds the base model (full fine-tuning), not adapters only."""
    trainable_denoisers: ClassVar[tuple[str, ...]] = ("unet",)
    """The denoiser kinds (a family record's ``denoiser``) this strategy can train; others are refused up front."""
    title: ClassVar[str]
    """What the strategy trains, for messages ("LoRA", "full fine-tuning" ...)."""

    trains_text_encoder: bool
    network: LoraNetwork | None = None
    """The adapters a LoRA run trains; the compare grid at the end loads each saved file into them."""
    ema_settings: EmaSettings | None = None
    ema: ExponentialMovingAverage | None = None
    """The moving average of the trained weights, when the run keeps one."""
    previews_from_ema: bool = False

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

    def keep_ema(self, config: FurnaceConfig, weights: dict[str, torch.Tensor], lora_run: bool) -> None:
        """Start the moving average of ``weights`` (by name) when the run keeps one."""
        self.ema_settings = ema_settings(config, lora_run)
        if self.ema_settings is not None:
            self.ema = ExponentialMovingAverage(weights, self.ema_settings)
            self.previews_from_ema = self.ema_settings.samples_ema(config.sample.use_ema)

    def output_names(self, output_name: str) -> list[str]:
        """The output names the saved files carry: the run's own, and that of the raw weights saved beside the EMA."""
        if self.ema_settings is not None and self.ema_settings.save == "both":
            return [output_name, raw_name(output_name)]
        return [output_name]

    def preview_weights(self) -> contextlib.AbstractContextManager[None]:
        """Inside the block the model holds the weights previews show (the EMA when ``sample.use_ema`` says so)."""
        if self.ema is not None and self.previews_from_ema:
            return self.ema.swapped_in()
        return contextlib.nullcontext()


WeightsFactory = type[TrainedWeights]
