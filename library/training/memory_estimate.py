"""A lower bound of the memory a run needs, from its settings and the base model's sizes, checked before loading.

Three terms, each counted low so that a refusal means the run clearly cannot fit:

- **weights**: every parameter of the base in the dtype it is stored in for the run (the frozen parts in bf16 under
  ``training.mixed_precision = "bf16"`` for a LoRA run, the VAE and anything trained in fp32). With
  ``model.fp8_base`` the stored parts take 1 byte a parameter: the UNet's matrix and convolution weights (every
  tensor of two or more dimensions) and, counted low, all of the text encoders';
- **training state**: what trains (LoRA adapters on the UNet's transformer blocks, or the whole UNet and text
  encoders of a full fine-tune), its gradients, the optimizer's state per parameter and the EMA copy. Under
  DeepSpeed, ZeRO partitions or offloads gradients and optimizer state, so they are not counted;
- **activations**: what the UNet keeps for the backward pass. It grows with images per batch x latent pixels and
  with the UNet's width: each level contributes its channels x blocks (a resnet, plus the transformer blocks on
  attention levels, per layer down and up) / 4 per level below the first. ``ACTIVATION_ELEMENTS`` per unit is set
  below what real runs keep, and gradient checkpointing divides it by ``CHECKPOINTED_SHARE``, more than it saves.
  A transformer (FLUX.1) counts its width x blocks per token instead, a token per packed latent patch.
  Encoding images with the VAE (every step without ``dataset.cache_latents``) does not overlap the UNet's pass, so
  the larger of the two counts.

What the process already holds (the interpreter, torch) is not part of the estimate: it is already taken from what
the machine reports as available.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from library.config import FurnaceConfig
from library.data.dataset_config import DatasetBlueprint, blueprints_from_config
from library.models.sizes import ModelSizes, read_model_sizes
from library.training.available_memory import Available, available_memory, resident_bytes
from library.training.exceptions import TrainingSetupError

logger = logging.getLogger(__name__)

ACTIVATION_ELEMENTS = 20
CHECKPOINTED_SHARE = 4
VAE_ELEMENTS = 2  # per pixel and channel of the VAE's first level, while it encodes
OPTIMIZER_STATE_BYTES = {"AdamW": 8, "AdamW8bit": 2, "Lion": 4, "Lion8bit": 1, "Prodigy": 16, "Adafactor": 0, "SGD": 4}
_GRADIENT_BYTES = _TRAINED_BYTES = 4  # trained tensors and their gradients are fp32
SKIP_KEY = "training.skip_memory_check"


@dataclass(frozen=True)
class LargestBatch:
    """The step with the most latent pixels, and the settings it comes from (for the refusal)."""

    width: int
    height: int
    batch_size: int
    settings: str


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    training_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.training_state + self.activations

    def summary(self) -> str:
        return (
            f"{show_bytes(self.total)} (weights {show_bytes(self.weights)}, training state "
            f"{show_bytes(self.training_state)}, activations {show_bytes(self.activations)})"
        )


def show_bytes(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def largest_batch(config: FurnaceConfig) -> LargestBatch:
    """From the run config, or from each dataset of an sd-scripts dataset TOML (raises its ``ConfigError``)."""
    section = config.dataset
    if not section.dataset_config:
        width, height = section.resolution
        return LargestBatch(width, height, section.batch_size, _settings(
            "dataset.resolution", "dataset.batch_size", section.resolution, section.batch_size))
    datasets: list[DatasetBlueprint] = blueprints_from_config(section)
    index, dataset = max(enumerate(datasets), key=lambda item: item[1].batch_size * _area(item[1].resolution))
    where = f"{section.dataset_config}: datasets[{index}]"
    settings = _settings(f"{where}.resolution", "batch_size", dataset.resolution, dataset.batch_size)
    return LargestBatch(*dataset.resolution, dataset.batch_size, settings)


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _settings(resolution_key: str, batch_key: str, resolution: tuple[int, int], batch_size: int) -> str:
    shown = resolution[0] if resolution[0] == resolution[1] else list(resolution)
    return f"{resolution_key} = {shown} with {batch_key} = {batch_size}"


def unet_activation_width(unet_config: dict) -> float:
    """Channels x blocks summed over the UNet's levels, each level weighted by its share of the latent pixels."""
    channels = unet_config["block_out_channels"]
    levels = len(channels)
    layers = _per_level(unet_config["layers_per_block"], levels)
    depths = _per_level(unet_config.get("transformer_layers_per_block", 1), levels)
    attention = [kind.startswith("CrossAttn") for kind in unet_config["down_block_types"]]
    return sum(
        width * (2 * layers[level] + 1) * (1 + (depths[level] if attention[level] else 0)) / 4**level
        for level, width in enumerate(channels)
    )


def transformer_activation_width(config: dict, patch: int) -> float:
    """A DiT's width x blocks per latent pixel: every block (double and single) keeps its token states, one token
    per ``patch x patch`` latent pixels (text tokens not counted: the estimate is a floor)."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    blocks = config.get("num_layers", 0) + config.get("num_single_layers", 0)
    return width * blocks / patch**2


def denoiser_activation_width(sizes: ModelSizes) -> float:
    """The activation width of the family's denoiser kind (a UNet's levels, or a transformer's blocks)."""
    config = dict(sizes.unet_config)
    if sizes.family.denoiser == "unet":
        return unet_activation_width(config)
    return transformer_activation_width(config, sizes.family.latent_patch_size)


def _per_level(value: int | list[int], levels: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def lora_adapter_parameters(sizes: ModelSizes, dim: int) -> int:
    """rank x (inputs + outputs) of every linear weight in the UNet's transformer blocks (the adapters' floor)."""
    return sum(
        dim * (shape[0] + shape[1])
        for key, shape in sizes.unet_shapes.items()
        if "transformer_blocks" in key and key.endswith(".weight") and len(shape) == 2
    )


def estimate_memory(
    config: FurnaceConfig,
    sizes: ModelSizes,
    batch: LargestBatch,
    full_fine_tune: bool,
    dtypes: tuple[torch.dtype, torch.dtype],
    partitioned: bool,
) -> MemoryEstimate:
    """The three terms of the module docstring; ``dtypes`` are the (UNet and text encoders, VAE) storage dtypes,
    ``partitioned`` says DeepSpeed holds gradients and optimizer state (and, with ZeRO-3, a full fine-tune's UNet)."""
    dtype, vae_dtype = dtypes
    parameters = sizes.parameters
    unet = 0 if partitioned and full_fine_tune else sizes.denoiser_parameters
    frozen = unet + sizes.text_encoder_parameters
    in_fp8 = fp8_stored_parameters(sizes) if config.model.fp8_base and not full_fine_tune else 0
    weights = in_fp8 + (frozen - in_fp8) * dtype.itemsize + parameters["vae"] * vae_dtype.itemsize
    return MemoryEstimate(weights, _training_state(config, sizes, full_fine_tune, partitioned),
                          _activations(config, sizes, batch, vae_dtype))


def fp8_stored_parameters(sizes: ModelSizes) -> int:
    """Parameters ``model.fp8_base`` stores in fp8, counted low where shapes are not known: the UNet's tensors of
    two or more dimensions (Linear and Conv2d weights) and every text-encoder parameter."""
    matrices = sum(int(torch.Size(shape).numel()) for shape in sizes.unet_shapes.values() if len(shape) >= 2)
    return matrices + sizes.text_encoder_parameters


def _training_state(config: FurnaceConfig, sizes: ModelSizes, full_fine_tune: bool, partitioned: bool) -> int:
    optimizer = config.optimizer
    state_bytes = OPTIMIZER_STATE_BYTES[optimizer.type]
    if optimizer.type == "SGD" and not optimizer.momentum:
        state_bytes = 0
    per_parameter = 0 if partitioned else _GRADIENT_BYTES + state_bytes
    if full_fine_tune:
        trained = sizes.denoiser_parameters
        trained += sizes.fine_tuned_text_encoder_parameters if config.dreambooth.train_text_encoder else 0
        ema = sizes.denoiser_parameters * _TRAINED_BYTES if config.dreambooth.use_ema else 0
        return trained * per_parameter + ema
    if config.network.module != "lora" or config.network.train_text_encoder_only:
        return 0
    return lora_adapter_parameters(sizes, config.network.dim) * (_TRAINED_BYTES + per_parameter)


def _activations(config: FurnaceConfig, sizes: ModelSizes, batch: LargestBatch, vae_dtype: torch.dtype) -> int:
    training = config.training
    downsampling = 2 ** (len(sizes.vae_config["block_out_channels"]) - 1)
    latent_pixels = batch.batch_size * (batch.width // downsampling) * (batch.height // downsampling)
    element = 4 if training.mixed_precision == "no" else 2
    unet = ACTIVATION_ELEMENTS * denoiser_activation_width(sizes) * latent_pixels * element
    if training.gradient_checkpointing:
        unet /= CHECKPOINTED_SHARE
    encoded = training.latents_per_encode if config.dataset.cache_latents else batch.batch_size
    vae = VAE_ELEMENTS * sizes.vae_config["block_out_channels"][0] * batch.width * batch.height * encoded
    return int(max(unet, vae * vae_dtype.itemsize))


def refusal(config: FurnaceConfig, sizes: ModelSizes, batch: LargestBatch, estimate: MemoryEstimate,
            available: Available, full_fine_tune: bool) -> str:
    """One line: the largest term and the settings behind it, what is available, and what to change (a full
    fine-tune keeps its weights in fp32 and cannot store them in fp8: only a LoRA or more memory shrink them)."""
    terms = {"activations": estimate.activations, "weights": estimate.weights,
             "training state": estimate.training_state}
    largest = max(terms, key=terms.__getitem__)
    if largest == "activations":
        what = f"{batch.settings} needs about {show_bytes(estimate.activations)} for activations"
        advice = "lower them" + ("" if config.training.gradient_checkpointing else
                                 ", turn on training.gradient_checkpointing")
    elif largest == "weights":
        what = (f"the base model {config.model.pretrained_model_name_or_path} ({sizes.family.name}) needs about "
                f"{show_bytes(estimate.weights)} for its weights")
        if full_fine_tune:
            advice = 'train a LoRA (dreambooth.train_method = "lora") or use a machine with more memory'
        elif config.training.mixed_precision == "no":
            advice = 'set training.mixed_precision = "bf16" (a LoRA run keeps its frozen weights in bf16)'
        elif not config.model.fp8_base:
            advice = "set model.fp8_base = true (a LoRA run's frozen weights in float8) or use a machine with more memory"
        else:
            advice = "use a machine with more memory"
    else:
        what = (f"training with optimizer.type = \"{config.optimizer.type}\" needs about "
                f"{show_bytes(estimate.training_state)} for the trained weights, gradients and optimizer state")
        advice = "train a LoRA, choose an 8-bit optimizer or Adafactor"
    return (f"{what} ({show_bytes(estimate.total)} in all); {show_bytes(available.bytes)} available "
            f"({available.source}); {advice}, or set {SKIP_KEY} = true")


def check_memory(
    config: FurnaceConfig,
    full_fine_tune: bool,
    dtypes: tuple[torch.dtype, torch.dtype],
    device: torch.device,
    partitioned: bool,
) -> MemoryEstimate | None:
    """Log the estimate; refuse (``TrainingSetupError``) a run whose estimate exceeds what the device has, unless
    ``training.skip_memory_check``. None when the model's sizes cannot be read (the loader then says why)."""
    batch = largest_batch(config)
    try:
        sizes = read_model_sizes(
            Path(config.model.pretrained_model_name_or_path), config.model.family, config.model.split_files()
        )
    except ValueError as error:
        logger.info("memory estimate skipped: the base model's sizes cannot be read (%s)", error)
        return None
    estimate = estimate_memory(config, sizes, batch, full_fine_tune, dtypes, partitioned)
    available = available_memory(device)
    held = resident_bytes() if device.type == "cpu" else None
    logger.info(
        "memory estimate: at least %s for %s from %s%s; %s available%s",
        estimate.summary(), batch.settings, sizes.source,
        f", beyond the {show_bytes(held)} this process holds" if held is not None else "",
        show_bytes(available.bytes) if available else "an unknown amount",
        f" ({available.source})" if available else "",
    )
    if available and estimate.total > available.bytes:
        if config.training.skip_memory_check:
            logger.warning("the memory estimate exceeds what is available; %s is set, so the run starts", SKIP_KEY)
        else:
            raise TrainingSetupError(refusal(config, sizes, batch, estimate, available, full_fine_tune))
    return estimate
