"""``sample.compare_at_end``: after a LoRA run's final save, the compare grid of its saved files.

The run's saved files in training order (:func:`library.training.run_files.run_files`, the order the ``compare``
tool gives a run folder) are the grid's rows (x the sample prompts), ``sample.compare_strengths`` its columns; the
picture and the single images go to ``<output_dir>/compare/``. Rendering reuses the model already in memory: each
file is loaded into the run's live adapters at a strength (no second copy of the base model, no merged weights),
after the optimizer state is released, so a GPU that trained the LoRA can also render it. With an EMA the grid
shows the files holding the weights ``sample.use_ema`` names (by default those of the run's own name).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from accelerate import Accelerator

from library.config import ConfigError, FurnaceConfig
from library.models.loader import BaseModel
from library.networks import LoraNetwork
from library.networks.pivotal_embeddings import embeddings_applied
from library.models.text_encoding import token_lengths
from library.sampling.compare_grid import LoraApplier, render_grid
from library.sampling.prompts import SamplePrompt
from library.training.ema import ema_settings
from library.training.progress import ProgressLog
from library.training.run_files import raw_name, run_files

logger = logging.getLogger(__name__)

COMPARE_DIR = "compare"
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_supported(config: FurnaceConfig, lora_run: bool) -> None:
    """compare_at_end needs a LoRA run (a full fine-tune has no strengths to compare) that saves the weights the
    grid should show; entry points may call this before training starts."""
    if not config.sample.compare_at_end:
        return
    if not lora_run:
        raise ConfigError([
            "sample.compare_at_end: works for LoRA runs only (this run fine-tunes the full model); "
            "set it to false, or train with dreambooth.train_method = \"lora\""
        ])
    grid_output_name(config)


def grid_output_name(config: FurnaceConfig) -> str:
    """The output name of the LoRA files the grid shows: the run's own, or that of its raw weights when
    ``sample.use_ema = false`` and the run saves both."""
    name, settings = config.output.output_name, ema_settings(config, lora_run=True)
    if settings is None or settings.samples_ema(config.sample.use_ema) == (settings.save != "raw"):
        return name
    if settings.save == "both":
        return raw_name(name)
    wanted, saved = ("EMA", "raw") if config.sample.use_ema else ("raw", "EMA")
    raise ConfigError([
        f"sample.use_ema: the compare grid renders saved files, and this run saves {saved} weights only "
        f"(network.ema_save = \"{settings.save}\"); set network.ema_save = \"both\" to compare the {wanted} weights, "
        "or unset sample.use_ema"
    ])


def live_adapters(network: LoraNetwork, model: BaseModel) -> LoraApplier:
    """Apply a file by loading it into the run's adapters and setting their strength; a pivotal-tuning run's file
    brings the token's rows it was saved with (an epoch's file is not shown with the final embedding)."""

    @contextlib.contextmanager
    def apply(lora: Path, strength: float) -> Iterator[None]:
        network.load_file(lora, strict=True)
        network.set_multiplier(strength)
        try:
            with embeddings_applied(model.family, model.tokenizers, model.text_encoders, lora):
                yield
        finally:
            network.set_multiplier(1.0)

    return apply


def write_compare_grid(
    config: FurnaceConfig,
    model: BaseModel,
    network: LoraNetwork | None,
    prompts: Sequence[SamplePrompt],
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    progress: ProgressLog,
) -> Path | None:
    """On the main process, render the grid into ``<output_dir>/compare/``; returns its path (None elsewhere/off).

    ``progress`` receives a ``compare`` event naming the grid and its size.
    """
    if not config.sample.compare_at_end:
        return None
    try:
        check_supported(config, lora_run=network is not None)
    except ConfigError as error:
        progress.event("error", message=str(error))  # the run's saved files stay; the GUI shows why it failed
        raise
    accelerator.wait_for_everyone()
    grid = None
    if accelerator.is_main_process:
        state = getattr(optimizer, "state", None)
        if isinstance(state, dict):
            state.clear()  # training is over: the optimizer's moments only take memory now
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        output_dir = Path(config.output.output_dir)
        files = run_files(output_dir, grid_output_name(config))
        strengths = config.sample.compare_strengths
        logger.info("compare: %d file(s) x %d strength(s) x %d prompt(s)", len(files), len(strengths), len(prompts))
        grid, singles = render_grid(
            model,
            files,
            strengths,
            prompts,
            output_dir / COMPARE_DIR,
            apply=live_adapters(network, model),
            clip_skip=config.model.clip_skip,
            autocast_dtype=_AUTOCAST.get(config.training.mixed_precision),
            batch_size=config.sample.render_batch_size,
            token_lengths=token_lengths(model.family, config.flow_matching.t5xxl_max_token_length),
        )
        progress.event("compare", file=grid, files=len(files), strengths=list(strengths), prompts=len(prompts),
                       images=len(singles))
        logger.info("wrote the compare grid %s and %d single images", grid, len(singles))
    accelerator.wait_for_everyone()
    return grid
