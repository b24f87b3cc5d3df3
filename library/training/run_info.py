"""What a run records about itself in every file it saves: the config, the data and the loop position gathered into
the plain values :mod:`library.networks.metadata` writes as ``ss_*`` keys."""

from __future__ import annotations

import time
from pathlib import Path

from library.config import FurnaceConfig
from library.data.pipeline import TrainingData
from library.networks.metadata import DatasetInfo, TrainingInfo
from library.training.run_setup import Schedule
from library.training.state import LoopPosition


def dataset_info(config: FurnaceConfig, data: TrainingData) -> DatasetInfo:
    """The training data's record (per-dataset settings from the first dataset, per-folder ones from its first
    training folder, as sd-scripts records them)."""
    first = data.datasets[0]
    folder = next(subset for subset in first.subsets if not subset.is_reg)
    return DatasetInfo(
        num_train_images=data.num_train_images,
        num_reg_images=data.num_reg_images,
        num_batches_per_epoch=data.steps_per_epoch,
        batch_size_per_device=first.batch_size,
        enable_bucket=first.enable_bucket,
        min_bucket_reso=first.min_bucket_reso,
        max_bucket_reso=first.max_bucket_reso,
        bucket_no_upscale=first.bucket_no_upscale,
        dataset_dirs=data.dataset_dirs,
        reg_dataset_dirs=data.reg_dataset_dirs,
        tag_frequency=data.tag_frequency,
        bucket_info=data.bucket_info,
        keep_tokens=folder.keep_tokens,
        shuffle_caption=folder.shuffle_caption,
        caption_dropout_rate=folder.caption_dropout_rate,
        caption_dropout_every_n_epochs=folder.caption_dropout_every_n_epochs,
        caption_tag_dropout_rate=folder.caption_tag_dropout_rate,
        flip_aug=folder.flip_aug,
        color_aug=folder.color_aug,
        random_crop=folder.random_crop,
        prior_loss_weight=config.dataset.prior_loss_weight,
        cache_latents=config.dataset.cache_latents,
        masked_loss=any(subset.masked for subset in data.subsets if not subset.is_reg),
    )


def epochs_reached(position: LoopPosition) -> int:
    """The epoch the weights are in, counting from 1: the current one once a batch of it trained, else the last
    one completed (a file saved at an epoch's end says that epoch, not the next)."""
    return position.epoch + (1 if position.batches_done else 0)


def training_info(
    config: FurnaceConfig, data: TrainingData, schedule: Schedule, position: LoopPosition, finished: bool
) -> TrainingInfo:
    """The run's record at ``position`` (``finished``: the final file, which gets the finishing time)."""
    return TrainingInfo(
        output_name=config.output.output_name,
        resolution=tuple(data.datasets[0].resolution),
        learning_rate=config.optimizer.learning_rate,
        unet_lr=config.network.unet_lr,
        text_encoder_lr=config.network.text_encoder_lr,
        num_epochs=schedule.num_epochs,
        epoch=epochs_reached(position),
        steps=position.global_step,
        max_train_steps=schedule.total_steps,
        gradient_accumulation_steps=config.training.gradient_accumulation_steps,
        optimizer=config.optimizer.type,
        lr_scheduler=config.optimizer.lr_scheduler,
        mixed_precision=config.training.mixed_precision,
        fp8_base=config.model.fp8_base,
        seed=config.training.seed,
        clip_skip=config.model.clip_skip,
        noise_offset=config.training.noise_offset or None,
        min_snr_gamma=config.training.min_snr_gamma,
        training_started_at=position.training_started_at,
        training_finished_at=time.time() if finished else None,
        sd_model_name=Path(config.model.pretrained_model_name_or_path).name,
        session_id=position.session_id,
        training_comment=config.output.training_comment,
        dataset=dataset_info(config, data),
    )
