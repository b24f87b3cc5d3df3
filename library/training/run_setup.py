"""Everything a run builds before its first step: optimizer, schedule, output folder, reporting."""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from library.atomic_files import remove_stale_temporaries
from library.config import FurnaceConfig, save_resolved
from library.folder_lock import FolderLock, lock_folder
from library.sampling.files import SAMPLE_DIR_NAME
from library.training.exceptions import OutputError
from library.training.optimizers import build_lr_scheduler, build_optimizer
from library.training.progress import MetricsWriter, ProgressLog
from library.training.write_failures import reported_write_failures

logger = logging.getLogger(__name__)

CONFIG_FILE_NAME = "config.toml"


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


def build_optimization(config: FurnaceConfig, groups: list[dict], schedule: Schedule):
    section = config.optimizer
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
    lock: FolderLock | None = None
    """Held by the main process for the run's life: a second run on the same folder is refused."""


def prepare_output(config: FurnaceConfig, is_main: bool) -> RunPaths:
    """Claim the output folder (no other run may write to it), clear what killed runs left half-written in it and
    write the resolved config beside the weights. A resume writes it only once its state is accepted
    (``record_config``): a refused resume leaves the record of the settings the state was trained with."""
    output_dir = Path(config.output.output_dir)
    log_dir = Path(config.logging.log_dir) if config.logging.log_dir else output_dir / "logs"
    paths = RunPaths(output_dir, log_dir, output_dir / "progress.jsonl")
    if not is_main:
        return paths
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"output.output_dir: {output_dir} is a file, not a folder; choose another output.output_dir")
    # The lock file is the first thing written: a folder that refuses it refuses the config file too.
    with reported_write_failures(output_dir, output_dir / CONFIG_FILE_NAME, "nothing was written"):
        paths.lock = lock_folder(output_dir, "wait for that run to end, or choose another output.output_dir")
        try:
            for folder in (output_dir, output_dir / SAMPLE_DIR_NAME):
                remove_stale_temporaries(folder)
            if not config.training.resume:
                record_config(config, paths)
        except BaseException:
            paths.lock.release()
            raise
    return paths


def record_config(config: FurnaceConfig, paths: RunPaths) -> None:
    """The run's resolved settings as ``config.toml`` beside its weights."""
    config_file = paths.output_dir / CONFIG_FILE_NAME
    with reported_write_failures(paths.output_dir, config_file, "nothing was written"):
        save_resolved(config, config_file)


def reporting(config: FurnaceConfig, paths: RunPaths, is_main: bool) -> tuple[ProgressLog, MetricsWriter]:
    return (
        ProgressLog(paths.progress_file, enabled=is_main),
        MetricsWriter(paths.log_dir, enabled=is_main and config.logging.tensorboard),
    )


def new_session() -> tuple[str, float]:
    return uuid.uuid4().hex, time.time()
