"""Everything a LoRA run builds before its first step: model, data, adapters, optimizer, schedule, reporting."""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from library.config import FurnaceConfig, save_resolved
from library.models.loader import BaseModel, load_base_model
from library.networks import LoraNetwork, LoraOptions, inject_lora, read_lora_file
from library.training.accelerator import Precision, build_accelerator
from library.training.optimizers import build_lr_scheduler, build_optimizer
from library.training.progress import MetricsWriter, ProgressLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """How long the run is: optimizer steps in total, per epoch, and epochs."""

    total_steps: int
    updates_per_epoch: int
    num_epochs: int
    accumulation: int


def plan_schedule(config: FurnaceConfig, batches_per_epoch: int) -> Schedule:
    """max_train_epochs wins over max_train_steps; accumulation windows end at epoch boundaries."""
    accumulation = config.training.gradient_accumulation_steps
    updates_per_epoch = max(1, math.ceil(batches_per_epoch / accumulation))
    if config.training.max_train_epochs:
        total = config.training.max_train_epochs * updates_per_epoch
    else:
        total = config.training.max_train_steps
    return Schedule(total, updates_per_epoch, math.ceil(total / updates_per_epoch), accumulation)


def lora_options(config: FurnaceConfig) -> LoraOptions:
    section = config.network
    return LoraOptions(
        dim=section.dim,
        alpha=section.alpha,
        dropout=section.dropout,
        conv_dim=section.conv_dim,
        conv_alpha=section.conv_alpha,
        use_dora=section.use_dora,
        train_unet_only=section.train_unet_only,
        train_text_encoder_only=section.train_text_encoder_only,
    )


def load_model(config: FurnaceConfig) -> BaseModel:
    section = config.model
    return load_base_model(
        section.pretrained_model_name_or_path, family=section.family, vae=section.vae, config_dir=section.config_dir
    )


def attach_network(config: FurnaceConfig, model: BaseModel, precision: Precision, device) -> LoraNetwork:
    """Freeze the base model (stored in the frozen dtype), inject fp32 adapters, optionally load start weights."""
    model.unet.to(device, precision.frozen)
    for encoder in model.text_encoders:
        encoder.to(device, precision.frozen)
    model.vae.to(device, torch.float32)  # the VAE stays fp32: SD VAEs overflow in fp16
    model.vae.requires_grad_(False)
    network = inject_lora(model.family, model.unet, model.text_encoders, lora_options(config))
    for parameter in network.trainable_parameters():
        parameter.data = parameter.data.float()
    if config.network.network_weights:
        tensors, _ = read_lora_file(config.network.network_weights)
        network.load_kohya(tensors, strict=True, source=str(config.network.network_weights))
        logger.info("continuing from the LoRA weights in %s", config.network.network_weights)
    if config.training.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        for encoder in model.text_encoders:
            encoder.gradient_checkpointing_enable()
    return network


def trains_text_encoder(config: FurnaceConfig, network: LoraNetwork) -> bool:
    return network.options.adapts_text_encoders and config.network.text_encoder_lr != 0


def build_optimization(config: FurnaceConfig, network: LoraNetwork, schedule: Schedule):
    section = config.optimizer
    groups = network.param_groups(config.network.unet_lr, config.network.text_encoder_lr, section.learning_rate)
    if not groups:
        raise ValueError("nothing to train: every adapter group has a learning rate of 0")
    optimizer = build_optimizer(
        section.type,
        groups,
        section.learning_rate,
        weight_decay=section.weight_decay,
        betas=tuple(section.betas),
        eps=section.eps,
        momentum=section.momentum if section.type == "SGD" else None,
        extra_args=dict(section.args),
    )
    warmup = section.lr_warmup_steps
    warmup_steps = int(warmup * schedule.total_steps) if warmup < 1 else int(warmup)
    lr_scheduler = build_lr_scheduler(
        section.lr_scheduler,
        optimizer,
        schedule.total_steps,
        warmup_steps=warmup_steps,
        num_cycles=section.lr_scheduler_num_cycles,
        power=section.lr_scheduler_power,
    )
    return optimizer, lr_scheduler


@dataclass
class RunPaths:
    output_dir: Path
    log_dir: Path
    progress_file: Path


def prepare_output(config: FurnaceConfig, is_main: bool) -> RunPaths:
    """Create the output folder and write the resolved config beside the weights."""
    output_dir = Path(config.output.output_dir)
    log_dir = Path(config.logging.log_dir) if config.logging.log_dir else output_dir / "logs"
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(config, output_dir / "config.toml")
    return RunPaths(output_dir, log_dir, output_dir / "progress.jsonl")


def reporting(config: FurnaceConfig, paths: RunPaths, is_main: bool) -> tuple[ProgressLog, MetricsWriter]:
    return (
        ProgressLog(paths.progress_file, enabled=is_main),
        MetricsWriter(paths.log_dir, enabled=is_main and config.logging.tensorboard),
    )


def new_session() -> tuple[str, float]:
    return uuid.uuid4().hex, time.time()


__all__ = [
    "Schedule",
    "attach_network",
    "build_accelerator",
    "build_optimization",
    "load_model",
    "lora_options",
    "new_session",
    "plan_schedule",
    "prepare_output",
    "reporting",
    "trains_text_encoder",
]
