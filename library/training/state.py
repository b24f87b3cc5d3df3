"""Resumable training state: ``<output_dir>/state/``.

accelerate saves the optimizer, LR scheduler and every RNG (python, numpy, torch) per process; hooks replace its
full-model save by the adapter tensors alone (a few MB instead of GBs), stored exactly (fp32), and add the EMA of
the trained weights when the run keeps one (``ema.safetensors``, also under DeepSpeed); a JSON file holds
the loop position, and the manifest (``state_manifest.py``) every file's hash and what the state fits. The folder
is written beside ``state`` and swapped in whole, so an interrupted save leaves the previous state, never a
half-written one; a resume checks the manifest before it loads anything, and that the random-number states took.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.utils import load as load_pickled_tensors
from safetensors.torch import load_file, save_file

from library.atomic_files import recover_folder, replace_folder, staging_folder, write_text_atomic
from library.training.deepspeed_setup import (
    continue_cpu_adam_powers,
    state_load_options,
    state_save_options,
    uses_deepspeed,
)
from library.training.ema import ExponentialMovingAverage
from library.training.exceptions import ResumeError
from library.training.state_manifest import SavedFor, verify_state, write_manifest

logger = logging.getLogger(__name__)

STATE_DIR_NAME = "state"
POSITION_FILE = "furnace_state.json"
ADAPTER_FILE = "adapter.safetensors"
EMA_FILE = "ema.safetensors"
RNG_FILE = "random_states_{}.pkl"  # accelerate's name for each process's random-number states


@dataclass
class LoopPosition:
    """Where the loop is: optimizer steps done, current epoch, batches of that epoch already consumed."""

    global_step: int = 0
    epoch: int = 0
    batches_done: int = 0
    smoothed_loss: dict[str, float] = field(default_factory=dict)
    session_id: str = ""
    training_started_at: float = 0.0


def adapter_tensors(named_parameters: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {name: param.detach().to("cpu", torch.float32).contiguous() for name, param in named_parameters.items()}


def register_adapter_hooks(accelerator, named_parameters: dict[str, torch.nn.Parameter]) -> None:
    """Make accelerate's save/load_state store only the trainable adapter tensors. Under DeepSpeed the engine's own
    checkpoint holds them (partitioned under ZeRO-3, where reading them here would see empty shards)."""
    if uses_deepspeed(accelerator):
        return

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            save_file(adapter_tensors(named_parameters), os.path.join(output_dir, ADAPTER_FILE))
        weights.clear()

    def load_hook(models, input_dir):
        saved = load_file(os.path.join(input_dir, ADAPTER_FILE))  # its names and shapes checked by the manifest
        with torch.no_grad():
            for name, param in named_parameters.items():
                param.copy_(saved[name].to(param.device, param.dtype))
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def register_ema_hooks(accelerator, ema: ExponentialMovingAverage) -> None:
    """Make accelerate's save/load_state carry the EMA: written by the main process, read by every one."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            ema.save(Path(output_dir) / EMA_FILE)

    def load_hook(models, input_dir):
        ema.load(Path(input_dir) / EMA_FILE)  # present: the manifest says the state was saved with an EMA

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_training_state(accelerator, output_dir: Path, position: LoopPosition, saved_for: SavedFor) -> Path:
    """Write ``output_dir/state`` atomically (all processes call this; the main one swaps the folder in). A save
    that fails leaves the previous state and no staged files."""
    final = output_dir / STATE_DIR_NAME
    staging = staging_folder(final)  # one place all processes agree on
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging), **state_save_options(accelerator))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_text_atomic(staging / POSITION_FILE, json.dumps(asdict(position), indent=1))
            write_manifest(staging, saved_for)
            replace_folder(staging, final)
    except Exception:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def resolve_resume_dir(resume: str | None, output_dir: Path) -> Path | None:
    """``training.resume``: a state folder, or ``latest`` for ``<output_dir>/state``; None when not resuming."""
    if not resume:
        return None
    state_dir = output_dir / STATE_DIR_NAME if resume == "latest" else Path(resume).expanduser()
    recover_folder(state_dir)
    if not (state_dir / POSITION_FILE).is_file():
        hint = (
            " (no run saved state there yet; enable output.save_state or stop a run with Ctrl-C to create one)"
            if resume == "latest"
            else ""
        )
        raise ResumeError(f"training.resume: {state_dir} is not a saved training state{hint}")
    return state_dir


def load_training_state(accelerator, state_dir: Path, saved_for: SavedFor) -> LoopPosition:
    """Check the state against its manifest and this run, then restore optimizer, scheduler, RNGs and adapter
    tensors; return the saved loop position."""
    verify_state(state_dir, saved_for)
    accelerator.load_state(str(state_dir), **state_load_options(accelerator))
    continue_cpu_adam_powers(accelerator)
    _check_random_states(state_dir / RNG_FILE.format(accelerator.process_index))
    position = LoopPosition(**json.loads((state_dir / POSITION_FILE).read_text(encoding="utf-8")))
    logger.info(
        "resumed from %s at step %d (epoch %d, %d batches into it)",
        state_dir,
        position.global_step,
        position.epoch + 1,
        position.batches_done,
    )
    return position


def _check_random_states(path: Path) -> None:
    """accelerate logs a failed RNG restore at INFO and carries on; a resume that would no longer be exact stops."""
    try:  # read as accelerate reads it: weights_only, numpy's RNG arrays allowed, never code
        restored = torch.equal(torch.get_rng_state(), load_pickled_tensors(path)["torch_manual_seed"])
    except Exception:  # noqa: BLE001 - whatever keeps the file from loading, the restore did not happen
        restored = False
    if not restored:
        raise ResumeError(f"training.resume: the random-number states in {path} could not be restored, so the run "
                          "would not continue exactly; start again without training.resume")
