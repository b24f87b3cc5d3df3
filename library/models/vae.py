"""Load a separate VAE (e.g. the fixed ``vae-ft-mse-840000`` or ``sdxl_vae``) to replace a model's own.

Accepted: a diffusers VAE folder (``config.json`` + weights), or a single ``.safetensors``/``.ckpt`` holding the VAE
in the original layout (with or without the ``first_stage_model.`` prefix, as A1111 VAE files come) or in the
diffusers layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from library.models.checkpoint_io import read_state_dict
from library.models.errors import ModelLoadError
from library.models.families import ModelFamily

logger = logging.getLogger(__name__)


def load_vae(path: Path, family: ModelFamily, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The VAE at ``path`` as an ``AutoencoderKL`` with the family's latent scaling factor."""
    from diffusers import AutoencoderKL

    if not path.exists():
        raise ModelLoadError(
            f"model.vae: not found: {path}. Expected a diffusers VAE folder or a .safetensors/.ckpt VAE file."
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model.vae: {path} is a folder without config.json; not a diffusers VAE folder")
        vae = AutoencoderKL.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    else:
        vae = _vae_from_file(path, family, dtype)
    logger.info("using the VAE from %s", path)
    return vae


def _vae_from_file(path: Path, family: ModelFamily, dtype: torch.dtype) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    from library.models.single_file import reference_configs, vae_original_to_diffusers

    state_dict, _ = read_state_dict(path)
    if any(key.startswith("encoder.down_blocks.") for key in state_dict):
        config, weights = reference_configs(family.name)["vae"], state_dict
    else:
        try:
            config, weights = vae_original_to_diffusers(family.name, state_dict)
        except ValueError as error:
            raise ModelLoadError(f"model.vae: {path} is not a Stable Diffusion VAE: {error}") from None
    config = {**config, "scaling_factor": family.latent_scaling_factor}
    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    weights = {key: value.to(dtype) for key, value in weights.items()}
    result = vae.load_state_dict(weights, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys + result.unexpected_keys)[0]
        raise ModelLoadError(f"model.vae: {path} does not fit a {family.name} VAE (e.g. key {example!r})")
    return vae
