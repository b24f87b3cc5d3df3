"""The weights a full fine-tune's resumable state folder (``<output_dir>/state``) holds, put into a model.

A DreamBooth run writes its checkpoints with the EMA weights of the UNet when ``dreambooth.use_ema`` is on; the
trained ("raw") weights then exist only in the state: accelerate's ``model.safetensors`` (the UNet, diffusers
names), ``model_1.safetensors``... (text encoders it trained), and ``ema.safetensors`` (the EMA of the UNet's
parameters, fp32, under the same names). Everything else (VAE, untrained text encoders) comes
from a base model: by default the run's own final checkpoint.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import torch
from safetensors.torch import load_file

from library.models.loader import BaseModel
from library.tools.common import ToolError
from library.training.run_files import final_path
from library.training.run_setup import CONFIG_FILE_NAME
from library.training.state import ADAPTER_FILE, EMA_FILE, POSITION_FILE

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"  # accelerate's name for the first prepared model; later ones get _1, _2, ...
WEIGHT_CHOICES = ("ema", "raw")


def is_state_folder(path: Path) -> bool:
    return path.is_dir() and (path / POSITION_FILE).is_file()


def run_checkpoint(state: Path) -> Path:
    """The final checkpoint of the run that wrote ``state`` (named by its ``config.toml``), if it is still there."""
    config = state.parent / CONFIG_FILE_NAME
    try:
        name = tomllib.loads(config.read_text(encoding="utf-8"))["output"]["output_name"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as error:
        raise ToolError(f"{state}: cannot read the run's output name from {config} ({error}); give --base") from None
    checkpoint = final_path(state.parent, name)
    if not checkpoint.is_file():
        raise ToolError(f"{state}: the run's checkpoint {checkpoint} is missing; give --base (the run's base model)")
    return checkpoint


def default_weights(state: Path) -> str:
    """EMA when the state has an EMA copy (what the run's checkpoints hold), else the raw weights."""
    return "ema" if (state / EMA_FILE).is_file() else "raw"


@torch.no_grad()
def load_state_weights(model: BaseModel, state: Path, weights: str) -> None:
    """Put the state's UNet (EMA or raw) and any text encoders it trained into ``model``."""
    if not (state / MODEL_FILE).is_file():
        kind = "a LoRA run's state: its weights are the run's LoRA files" if (state / ADAPTER_FILE).is_file() else (
            "no model.safetensors (states saved under DeepSpeed are not supported)"
        )
        raise ToolError(f"{state}: {kind}")
    if weights == "ema":
        _load_ema(model.unet, state / EMA_FILE)
    else:
        _load_module(model.unet, state / MODEL_FILE)
    for index, encoder in enumerate(model.text_encoders, start=1):
        path = state / f"model_{index}.safetensors"
        if path.is_file():
            _load_module(encoder, path)
            logger.info("text encoder %d: trained weights from %s", index, path.name)


def _load_module(module: torch.nn.Module, path: Path) -> None:
    tensors = load_file(str(path))
    _check_fit(path, tensors, module.state_dict())
    module.load_state_dict(tensors, strict=True)


def _load_ema(unet: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ToolError(f"{path.parent}: the state has no EMA weights (dreambooth.use_ema was off); use --weights raw")
    average, parameters = load_file(str(path)), dict(unet.named_parameters())
    _check_fit(path, average, parameters)
    for name, parameter in parameters.items():
        parameter.copy_(average[name])


def _check_fit(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Refuse a file whose tensors are not exactly ``expected``'s names and shapes (another base model's)."""
    misfit = [key for key in expected if key not in tensors or tensors[key].shape != expected[key].shape]
    misfit += sorted(set(tensors) - set(expected))
    if misfit:
        raise ToolError(
            f"{path}: does not fit the base model ({len(misfit)} tensor(s) missing, extra or of another shape, "
            f"e.g. {misfit[0]!r}); give the run's own base model as --base"
        )
