"""DeepSpeed through accelerate: the plugin for a run launched with ``accelerate launch --use_deepspeed``.

The ZeRO stage and offload devices come from the launcher (``accelerate config`` / ``--zero_stage`` /
``--offload_optimizer_device`` / a DeepSpeed JSON); the fields DeepSpeed needs from the run itself (micro batch
size, accumulation, gradient clipping) are filled in from the Furnace config, because the loop feeds batches itself
rather than through a prepared DataLoader, which is where accelerate would otherwise read them. Combinations the
loop cannot run are refused before any model loads, with what to change. On a CPU-only machine DeepSpeed still
runs (gloo process group); accelerate must then not be forced to CPU mode, which would silently bypass DeepSpeed.
"""

from __future__ import annotations

import os

from library.config import FurnaceConfig
from library.training.accelerator import TrainingSetupError


def launched_with_deepspeed() -> bool:
    """True under ``accelerate launch --use_deepspeed`` (or an accelerate config with DeepSpeed as its type)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _check_run(config: FurnaceConfig) -> None:
    network = config.network
    if not (network.train_unet_only or network.train_text_encoder_only or network.text_encoder_lr == 0):
        raise TrainingSetupError(
            "DeepSpeed: accelerate prepares one trained model per DeepSpeed engine; set "
            "network.train_unet_only = true (or network.train_text_encoder_only = true) for a DeepSpeed run"
        )
    if config.training.gradient_accumulation_steps != 1:
        raise TrainingSetupError(
            "DeepSpeed: training.gradient_accumulation_steps must be 1 (the DeepSpeed engine steps on every "
            "backward); raise dataset.batch_size or the number of processes instead"
        )


def _check_stage(plugin) -> None:
    """ZeRO-3 partitions every parameter across ranks; the loop saves and resumes adapter tensors by reading them
    directly, which would see only this rank's empty shard, so stage 3 is refused rather than writing bad files."""
    if plugin.zero_stage == 3:
        raise TrainingSetupError(
            "DeepSpeed ZeRO-3 is not supported by this trainer (it partitions the adapter weights the trainer "
            "saves); use --zero_stage 2 (optimizer and gradient partitioning, optionally "
            "--offload_optimizer_device cpu), or launch without DeepSpeed"
        )


def build_deepspeed_plugin(config: FurnaceConfig):
    """The ``DeepSpeedPlugin`` for this run, or None when it was not launched with DeepSpeed."""
    if not launched_with_deepspeed():
        return None
    from accelerate.utils import DeepSpeedPlugin

    _check_run(config)
    plugin = DeepSpeedPlugin(gradient_accumulation_steps=1, gradient_clipping=config.optimizer.max_grad_norm)
    _check_stage(plugin)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    micro_batch = config.dataset.batch_size
    settings = plugin.deepspeed_config
    if settings.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        settings["train_micro_batch_size_per_gpu"] = micro_batch
    if settings.get("train_batch_size", "auto") == "auto":
        settings["train_batch_size"] = settings["train_micro_batch_size_per_gpu"] * world
    return plugin
