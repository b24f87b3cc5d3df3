"""What a LoRA run trains and writes: peft adapters on a frozen base, saved as a kohya-format LoRA file.

With an EMA (``network.ema_decay``) each save writes the average, the trained ("raw") weights, or both
(``network.ema_save``; the raw ones then under the output name of :func:`run_files.raw_name`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.networks import LoraNetwork, LoraOptions, TrainingInfo, inject_lora, lora_metadata
from library.networks.targets import TEXT_ENCODER, UNET
from library.training.accelerator import Precision
from library.training.learning_rates import optimizer_groups, part_rates
from library.training.run_files import raw_companion
from library.training.state import register_adapter_hooks, register_ema_hooks
from library.training.weights import TrainedWeights

logger = logging.getLogger(__name__)


def lora_options(config: FurnaceConfig) -> LoraOptions:
    section = config.network
    return LoraOptions(
        module=section.module,
        dim=section.dim,
        alpha=section.alpha,
        dropout=section.dropout,
        conv_dim=section.conv_dim,
        conv_alpha=section.conv_alpha,
        use_dora=section.use_dora,
        train_unet_only=section.train_unet_only,
        train_text_encoder_only=section.train_text_encoder_only,
        lokr_factor=section.lokr_factor,
        lokr_full_matrix=section.lokr_full_matrix,
        save_format=section.save_format,
        train_blocks=section.train_blocks,
        train_double_block_indices=section.train_double_block_indices,
        train_single_block_indices=section.train_single_block_indices,
    )


def freeze_base(model: BaseModel, precision: Precision, device, fp8: bool) -> None:
    """Frozen weights in the frozen dtype on the device; the VAE stays fp32 (SD VAEs overflow in fp16). An fp8
    base keeps the dtypes it was loaded in (fp8 layers, the rest in the frozen dtype): it only moves."""
    dtype = None if fp8 else precision.frozen
    for module in (model.unet, *model.text_encoders):
        module.to(device=device, dtype=dtype)
    model.vae.to(device, torch.float32)
    model.vae.requires_grad_(False)


def enable_checkpointing(model: BaseModel, text_encoders_too: bool) -> None:
    """Activation checkpointing; transformers applies it to a text encoder only while it is in training mode."""
    model.unet.enable_gradient_checkpointing()
    if text_encoders_too:
        for encoder in model.text_encoders:
            encoder.activation_checkpointing_enable()


class LoraWeights(TrainedWeights):
    """Adapters injected into the model; optimizer groups per part; state = adapter tensors only."""

    saves_base_model = False
    title = "LoRA training"
    trainable_denoisers = ("unet", "transformer")

    @staticmethod
    def load_dtypes(precision: Precision) -> tuple[torch.dtype, torch.dtype]:
        """(UNet and text encoders, VAE) storage dtypes: the whole base is frozen, so it loads as ``freeze_base``
        keeps it and no fp32 copy of the UNet is ever held in a bf16 run."""
        return precision.frozen, torch.float32

    def __init__(self, config: FurnaceConfig, model: BaseModel, precision: Precision, device: torch.device) -> None:
        self.config, self.model = config, model
        freeze_base(model, precision, device, fp8=config.model.fp8_base)
        self.network: LoraNetwork = inject_lora(model.family, model.unet, model.text_encoders, lora_options(config))
        for parameter in self.network.trainable_parameters():
            parameter.data = parameter.data.float()
        if config.network.network_weights:
            self.network.load_file(config.network.network_weights)
            logger.info("continuing from the LoRA weights in %s", config.network.network_weights)
        rates = part_rates(config)
        self.trains_unet = self.network.options.adapts_unet and rates.trains(UNET)
        self.trains_text_encoder = self.network.options.adapts_text_encoders and rates.trains(TEXT_ENCODER)
        self.groups = optimizer_groups(self.network.parameters_by_part(), rates)
        if config.training.gradient_checkpointing:
            enable_checkpointing(model, text_encoders_too=self.trains_text_encoder)
        self.named_parameters = {
            f"{name}.{param_name}": param
            for name, layer in self.network.modules.items()
            for param_name, param in layer.named_parameters()
            if not param_name.startswith("base_layer.")
        }
        self.keep_ema(config, self.named_parameters, lora_run=True)

    def modules_to_prepare(self) -> list[torch.nn.Module]:
        """The modules holding trainable tensors (wrapped for distributed training)."""
        unet = [self.model.unet] if self.trains_unet else []
        if not self.trains_text_encoder:
            return unet
        adapted = {target.component for target in self.network.targets.values()}
        return unet + [encoder for index, encoder in enumerate(self.model.text_encoders) if index in adapted]

    def param_groups(self) -> list[dict]:
        return self.groups

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.named_parameters.values())

    def register_state_hooks(self, accelerator) -> None:
        register_adapter_hooks(accelerator, self.named_parameters)
        if self.ema is not None:
            register_ema_hooks(accelerator, self.ema)

    def after_step(self, step: int) -> None:
        """The EMA, when the run keeps one, folds in the new weights."""
        if self.ema is not None:
            self.ema.after_step(step)

    def sync_to_step(self, step: int) -> None:
        """Nothing depends on the step count for a LoRA."""

    def save(self, path: Path, info: TrainingInfo) -> None:
        settings = self.ema_settings
        if settings is None:
            self._write(path, info)
        elif settings.save == "raw":
            self._write(path, dataclasses.replace(info, ema=settings.info("raw")))
        else:
            with self.ema.swapped_in():
                self._write(path, dataclasses.replace(info, ema=settings.info("ema")))
            if settings.save == "both":
                companion = raw_companion(path, self.config.output.output_name)
                self._write(companion, dataclasses.replace(info, ema=settings.info("raw")))

    def _write(self, path: Path, info: TrainingInfo) -> None:
        metadata = lora_metadata(self.model.family, self.network.options, info)
        self.network.save(path, self.config.output.save_precision, metadata)
