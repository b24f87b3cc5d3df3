"""What a DreamBooth fine-tune trains and writes: the whole denoiser (a UNet, or FLUX.1's transformer) and optionally
the text encoders the family record marks ``fine_tuned`` (FLUX.1: CLIP-L; T5-XXL stays frozen), saved as an
original-layout single-file checkpoint that A1111 and ComfyUI load, optionally also as a diffusers folder with the
family's own sampling scheduler.

State for resume is accelerate's own full-model save; the optional EMA of the UNet (``training/ema.py``) is added
to it by the state hooks, and is what the checkpoints hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import torch

from library.atomic_files import atomic_folder
from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.models.pipeline import assemble_pipeline, component_configs, component_modules, pipeline_scheduler
from library.models.single_file import save_original_checkpoint
from library.networks import TrainingInfo, checkpoint_metadata, save_dtype
from library.networks.targets import TEXT_ENCODER, UNET
from library.training.accelerator import Precision
from library.training.learning_rates import optimizer_groups, part_rates
from library.training.lora_weights import enable_checkpointing
from library.training.state import register_ema_hooks
from library.training.weights import TrainedWeights

logger = logging.getLogger(__name__)


class FullWeights(TrainedWeights):
    """Full fine-tuning of the denoiser (+ text encoders until ``stop_text_encoder_training``), with optional EMA."""

    saves_base_model = True
    title = "full fine-tuning"
    trainable_denoisers = ("unet", "transformer")

    def __init__(self, config: FurnaceConfig, model: BaseModel, precision: Precision, device: torch.device) -> None:
        self.config, self.model = config, model
        section, rates = config.dreambooth, part_rates(config)
        fine_tuned = [spec.fine_tuned for spec in model.family.text_encoders]
        self.trained_encoders = [encoder for encoder, tuned in zip(model.text_encoders, fine_tuned)
                                 if tuned and section.train_text_encoder]
        self.trains_text_encoder = bool(self.trained_encoders) and rates.trains(TEXT_ENCODER)
        model.unet.to(device, torch.float32).requires_grad_(True)
        for encoder, tuned in zip(model.text_encoders, fine_tuned):
            trains = tuned and self.trains_text_encoder
            encoder.to(device, torch.float32 if trains else precision.frozen).requires_grad_(trains)
        model.vae.to(device, torch.float32).requires_grad_(False)
        parts = {UNET: list(model.unet.parameters())}
        if self.trained_encoders:
            parts[TEXT_ENCODER] = [param for encoder in self.trained_encoders for param in encoder.parameters()]
        self.groups = optimizer_groups(parts, rates)
        if config.training.gradient_checkpointing:
            enable_checkpointing(model, text_encoders_too=self.trains_text_encoder)
        self.keep_ema(config, dict(model.unet.named_parameters()), lora_run=False)

    def modules_to_prepare(self) -> list[torch.nn.Module]:
        return [self.model.unet] + (self.trained_encoders if self.trains_text_encoder else [])

    def param_groups(self) -> list[dict]:
        return self.groups

    def parameters(self) -> list[torch.nn.Parameter]:
        return [param for group in self.param_groups() for param in group["params"] if param.requires_grad]

    def register_state_hooks(self, accelerator) -> None:
        """The EMA travels with the state (accelerate saves the models themselves)."""
        if self.ema is not None:
            register_ema_hooks(accelerator, self.ema)

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.after_step(step)
        self.sync_to_step(step)

    def sync_to_step(self, step: int) -> None:
        """Apply what depends on the step count (also right after a resume)."""
        stop_at = self.config.dreambooth.stop_text_encoder_training
        if self.trains_text_encoder and stop_at and step >= stop_at:
            for encoder in self.trained_encoders:
                encoder.requires_grad_(False).eval()
            self.trains_text_encoder = False
            logger.info("step %d: text encoder training stopped (dreambooth.stop_text_encoder_training)", step)

    def save(self, path: Path, info: TrainingInfo) -> None:
        model, family = self.model, self.model.family
        modules = component_modules(family, model.unet, model.vae, model.text_encoders)
        if self.ema_settings is not None:
            info = dataclasses.replace(info, ema=self.ema_settings.info("ema"))
        metadata = checkpoint_metadata(family, info)
        with self._saved_weights():
            state_dicts = {name: module.state_dict() for name, module in modules.items()}
            save_original_checkpoint(
                path, family.name, state_dicts, component_configs(modules), metadata,
                dtype=save_dtype(self.config.output.save_precision),
            )
            logger.info("wrote checkpoint %s", path)
            if self.config.dreambooth.save_diffusers and info.training_finished_at is not None:
                self._save_diffusers(path.with_name(f"{path.stem}_diffusers"))

    def _save_diffusers(self, folder: Path) -> None:
        model = self.model
        pipeline = assemble_pipeline(
            model.family, model.unet, model.vae, model.text_encoders, model.tokenizers, pipeline_scheduler(model.family)
        )
        with atomic_folder(folder) as staging:
            pipeline.save_pretrained(staging, safe_serialization=True)
        logger.info("wrote diffusers folder %s", folder)

    def _saved_weights(self) -> contextlib.AbstractContextManager[None]:
        """Inside the block the UNet holds what the checkpoints hold: the EMA when the run keeps one."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
