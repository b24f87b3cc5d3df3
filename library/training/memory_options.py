"""What a run keeps in memory: the base model loaded in its storage dtypes, and frozen parts dropped once cached.

Peak RSS is set at two moments: loading (a bf16 run must never hold an fp32 copy of the UNet) and the steps
(weights + activations). Once latents are cached the VAE is dead weight, and so is a frozen text encoder once
its outputs are cached -- unless images will be rendered (previews, the compare grid at the end: they encode
prompts and decode with the VAE) or the written file contains the base model (full fine-tuning); a LoRA file
holds adapters only. Rendering reloads nothing lazily: with previews configured both modules simply stay. A base
that is never saved is memory-mapped rather than read where it keeps its stored dtype. With ``model.fp8_base`` the
frozen UNet's and text encoders' Linear and Conv2d weights are stored in float8 (``models/fp8.py``), read straight
into it from a diffusers folder.
"""

from __future__ import annotations

import gc
import logging

import torch

from library.config import ConfigError, FurnaceConfig
from library.models.fp8 import fp8_dtype
from library.models.loader import BaseModel, load_base_model
from library.training.accelerator import Precision
from library.training.weights import WeightsFactory

logger = logging.getLogger(__name__)


def load_training_model(config: FurnaceConfig, weights_factory: WeightsFactory, precision: Precision) -> BaseModel:
    """The run's base model, read straight into the storage dtypes the weights strategy's ``load_dtypes`` names. A
    base the run never saves has the weights kept as stored memory-mapped instead of read -- unless the run re-lays
    out every conv weight channels-last: the replaced originals would stay resident in the file's mapping."""
    dtype, vae_dtype = weights_factory.load_dtypes(precision)
    section = config.model
    return load_base_model(
        section.pretrained_model_name_or_path,
        family=section.family,
        vae=section.vae,
        config_dir=section.config_dir,
        split_files=section.split_files(),
        dtype=dtype,
        vae_dtype=vae_dtype,
        map_weights=not weights_factory.saves_base_model and not config.training.channels_last,
        fp8=config.model.fp8_base,
    )


def check_fp8_base(config: FurnaceConfig, full_fine_tune: bool) -> None:
    """Refuse ``model.fp8_base`` where it cannot work (entry points call this before any model loads): a full
    fine-tune trains the weights fp8 would store, DoRA computes with the base weight itself, and a torch build
    without float8 types cannot store them."""
    if not config.model.fp8_base:
        return
    if full_fine_tune:
        raise ConfigError(['model.fp8_base: stores frozen weights in float8, but dreambooth.train_method = "full" '
                           'trains them; set model.fp8_base = false, or train with dreambooth.train_method = "lora"'])
    if config.network.use_dora:
        raise ConfigError(["model.fp8_base: DoRA (network.use_dora) computes with the base weights themselves; "
                           "set network.use_dora = false, or model.fp8_base = false"])
    if fp8_dtype() is None:
        raise ConfigError([f"model.fp8_base: this torch build ({torch.__version__}) has no float8_e4m3fn; install "
                           "torch 2.1 or later, or set model.fp8_base = false"])


def release_cached_modules(
    config: FurnaceConfig, model: BaseModel, saves_base_model: bool, previews: bool
) -> list[str]:
    """Free the VAE after the latent cache and the frozen text encoders after their output cache, when nothing
    later needs them; returns the names of what was freed.

    The modules stay in place with their weights moved to the meta device, so every holder of a reference sees
    the same empty module and the memory is returned at once.
    """
    if previews or config.sample.compare_at_end or saves_base_model:
        return []
    released = []
    if config.dataset.cache_latents:
        model.vae.to("meta")
        released.append("vae")
    if config.dataset.cache_text_encoder_outputs:
        for spec, encoder in zip(model.family.text_encoders, model.text_encoders):
            encoder.to("meta")
            released.append(spec.component)
    if released:
        gc.collect()
        logger.info("released %s (outputs cached; no previews or compare grid configured)", ", ".join(released))
    return released
