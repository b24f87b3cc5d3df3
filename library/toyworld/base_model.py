"""The shipped toy-world base model: where it lives, its config folder, and the recipe that rebuilds it.

The weights are one original-layout SD1 ``.safetensors`` file in fp16 (``models/toyworld-sd1.safetensors``),
committed with the project so that neither the quickstart nor the tests pay for pretraining; every loader, the web
front-end's model picker included, reads it like any SD1 checkpoint. The diffusers config folder that goes with it
(component configs, scheduler, tokenizer; no weights) is derived from the architecture and written on demand under
``output/``: it is what ``from_single_file(file, config=folder)`` needs to work offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open

from library.atomic_files import atomic_folder, atomic_path
from library.models.families import get_family
from library.toyworld.architecture import FAMILY, VAE_CONFIG, toy_configs
from library.toyworld.pretrain import (
    DiffusionSettings,
    VaeSettings,
    calibrate_latent_scale,
    encode_scenes,
    train_diffusion,
    train_vae,
)
from library.toyworld.world import HELD_OUT_COLOURS, IMAGE_SIZE, PRETRAINING_COLOURS, SHAPES

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]
BASE_MODEL_NAME = "toyworld-sd1"
SHIPPED_CONFIG_DIR = _REPO / "output" / "_toyworld" / BASE_MODEL_NAME


def base_model_file(folder: Path = _REPO / "models") -> Path:
    return folder / f"{BASE_MODEL_NAME}.safetensors"


def ensure_config_folder(target: Path = SHIPPED_CONFIG_DIR) -> Path:
    """Write the diffusers config folder of the toy model (no weights) to ``target`` if it is missing."""
    if (target / "model_index.json").is_file():
        return target
    from accelerate import init_empty_weights

    from library.models.tiny import build_components, build_pipeline

    family = get_family(FAMILY)
    with init_empty_weights():
        pipeline = build_pipeline(family, build_components(family, toy_configs(), seed=0))
    with atomic_folder(target) as staging:
        pipeline.save_config(staging)
        for name, component in pipeline.components.items():
            if component is None:
                continue
            if hasattr(component, "save_config"):  # diffusers models and schedulers
                component.save_config(staging / name)
            elif hasattr(component, "config"):  # transformers models
                component.config.save_pretrained(staging / name)
            else:  # tokenizers
                component.save_pretrained(staging / name)
    return target


def build_base_model(
    out_dir: Path,
    seed: int = 0,
    vae_settings: VaeSettings = VaeSettings(),
    diffusion_settings: DiffusionSettings = DiffusionSettings(),
) -> Path:
    """Pretrain the toy base model from scratch and write ``<out_dir>/toyworld-sd1.safetensors`` (fp16) and its
    config folder ``<out_dir>/toyworld-sd1/``; returns the file."""
    from library.models.single_file import save_original_checkpoint
    from library.models.pipeline import component_configs, component_modules
    from library.models.tiny import build_components, build_pipeline

    family = get_family(FAMILY)
    torch.manual_seed(seed)
    components = build_components(family, toy_configs(), seed)
    pipeline = build_pipeline(family, components)
    timings: dict[str, float] = {}

    timings["vae"] = _vae_stage(components.vae, family.latent_scaling_factor, vae_settings, seed, out_dir)

    started = time.monotonic()
    data = encode_scenes(components.vae, diffusion_settings.scenes, seed + 2)
    timings["encode"] = time.monotonic() - started
    started = time.monotonic()
    (text_encoder,) = components.text_encoders
    loss = train_diffusion(family, components.unet, text_encoder, pipeline.tokenizer, pipeline.scheduler, data,
                           diffusion_settings, seed + 3)
    timings["diffusion"] = time.monotonic() - started
    logger.info("UNet + text encoder: final loss %.4f, %.0f s", loss, timings["diffusion"])

    out_dir.mkdir(parents=True, exist_ok=True)
    modules = component_modules(family, components.unet, components.vae, components.text_encoders)
    target = base_model_file(out_dir)
    save_original_checkpoint(
        target,
        family.name,
        {name: module.state_dict() for name, module in modules.items()},
        component_configs(modules),
        metadata=_metadata(seed, vae_settings, diffusion_settings, timings),
        dtype=torch.float16,
    )
    config_dir = out_dir / BASE_MODEL_NAME
    shutil.rmtree(config_dir, ignore_errors=True)
    ensure_config_folder(config_dir)
    logger.info("wrote %s (%.1f MB)", target, target.stat().st_size / 2**20)
    return target


def _vae_stage(vae: torch.nn.Module, scaling_factor: float, settings: VaeSettings, seed: int, out_dir: Path) -> float:
    """Train the VAE, or take it from an earlier build into ``out_dir`` with the same settings (the recipe's longest
    stages are resumable by stage); returns the seconds the training took."""
    from safetensors.torch import load_file, save_file

    recipe = json.dumps({"seed": seed, "settings": asdict(settings), "config": VAE_CONFIG}, sort_keys=True)
    stage_file = out_dir / "stages" / f"vae-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.safetensors"
    if stage_file.is_file():
        vae.load_state_dict(load_file(stage_file))
        with safe_open(str(stage_file), framework="pt") as handle:
            seconds = float(handle.metadata()["seconds"])
        logger.info("VAE: reusing %s (trained in %.0f s)", stage_file, seconds)
        return seconds
    started = time.monotonic()
    error = train_vae(vae, settings, seed)
    factor = calibrate_latent_scale(vae, scaling_factor, seed + 1)
    seconds = time.monotonic() - started
    logger.info("VAE: reconstruction MSE %.4f, latent scale adjusted by %.3f, %.0f s", error, factor, seconds)
    with atomic_path(stage_file) as temporary:
        save_file(vae.state_dict(), str(temporary), metadata={"seconds": f"{seconds:.1f}", "recipe": recipe})
    return seconds


def _metadata(seed: int, vae: VaeSettings, diffusion: DiffusionSettings, timings: dict[str, float]) -> dict[str, str]:
    return {
        "modelspec.title": "Furnace toy-world SD1 base",
        "modelspec.description": (
            f"A small SD1-architecture model pretrained on generated {IMAGE_SIZE} px scenes of one shape "
            f"({', '.join(SHAPES)}) in one colour ({', '.join(PRETRAINING_COLOURS)}) on a white background. "
            f"Held out of pretraining: {', '.join(HELD_OUT_COLOURS)}. Rebuild: python -m library.toyworld build."
        ),
        "modelspec.resolution": f"{IMAGE_SIZE}x{IMAGE_SIZE}",
        "toyworld.recipe": json.dumps({"seed": seed, "vae": asdict(vae), "diffusion": asdict(diffusion)}),
        "toyworld.seconds": json.dumps({stage: round(seconds) for stage, seconds in timings.items()}),
    }
