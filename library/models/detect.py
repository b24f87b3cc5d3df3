"""Recognise a base model's family from what is on disk.

An original-layout file is recognised by marker keys (each family record lists them). FLUX.1 dev and schnell share
a layout; dev is guidance-distilled, so only its transformer has a guidance embedder (``guidance_in``, in a
diffusers folder ``guidance_embeds`` in the transformer config). SD2 epsilon and SD2
v-prediction share weights layouts, so the prediction type comes from, in order: the file's ``modelspec``
metadata, an A1111-style ``.yaml`` beside the file (``parameterization: "v"``), or the diffusers scheduler config;
without any of those SD2 is assumed to be epsilon and the log says how to override.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from safetensors import SafetensorError, safe_open

from library.models.errors import ModelLoadError
from library.models.families import (
    FAMILIES,
    FLUX1_DEV,
    FLUX1_SCHNELL,
    FLUX_GUIDANCE_MARKERS,
    SD1,
    SD2,
    SD2_V,
    SDXL,
    ModelFamily,
)

logger = logging.getLogger(__name__)

_DETECTION_ORDER = (FLUX1_DEV, SDXL, SD2, SD1)


def detect_original_family(
    path: Path, keys: Iterable[str], metadata: Mapping[str, str]
) -> ModelFamily:
    """The family of an original-layout state dict (``path`` is used for messages and the sidecar yaml)."""
    key_set = set(keys)
    for family in _DETECTION_ORDER:
        if any(marker in key_set for marker in family.original_marker_keys):
            if family is SD2:
                return SD2_V if _is_v_prediction_file(path, metadata) else _assume_sd2_epsilon(path)
            if family is FLUX1_DEV:
                return FLUX1_DEV if any(marker in key_set for marker in FLUX_GUIDANCE_MARKERS) else FLUX1_SCHNELL
            return family
    if not any(key.startswith("model.diffusion_model.") for key in key_set):
        raise ModelLoadError(
            f"{path}: no Stable Diffusion UNet weights (model.diffusion_model.*) found; is this a LoRA, a VAE or "
            "an embedding rather than a base model?"
        )
    raise ModelLoadError(
        f"{path}: unrecognised text encoder layout; supported families: {', '.join(FAMILIES)}. "
        "Set model.family to force one."
    )


def _is_v_prediction_file(path: Path, metadata: Mapping[str, str]) -> bool:
    prediction = metadata.get("modelspec.prediction_type", "").lower()
    if prediction:
        return prediction in ("v", "v_prediction")
    if "768-v" in metadata.get("modelspec.architecture", ""):
        return True
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8", errors="replace")
        return any(
            line.split(":", 1)[1].strip().strip("\"'") == "v"
            for line in text.splitlines()
            if line.strip().startswith("parameterization:")
        )
    return False


def _assume_sd2_epsilon(path: Path) -> ModelFamily:
    logger.info(
        "%s: SD2 weights without a prediction-type hint; assuming epsilon (512 base). "
        "For a 768-v model set model.family = \"sd2-v\" (or pass --v_parameterization).",
        path,
    )
    return SD2


def detect_diffusers_family(folder: Path) -> ModelFamily:
    """The family of a diffusers folder, from its pipeline class, text encoder and scheduler configs."""
    index = _read_json(folder / "model_index.json")
    if "transformer" in index and "Flux" in str(index.get("_class_name", "")):
        transformer = _read_json(folder / "transformer" / "config.json")
        return FLUX1_DEV if transformer.get("guidance_embeds") else FLUX1_SCHNELL
    if "XL" in str(index.get("_class_name", "")) or "text_encoder_2" in index:
        return SDXL
    encoder = _read_json(folder / "text_encoder" / "config.json")
    if encoder.get("hidden_act") != "gelu":
        return SD1
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", required=False)
    return SD2_V if scheduler.get("prediction_type") == "v_prediction" else SD2


def _read_json(path: Path, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise ModelLoadError(f"{path} is missing; a diffusers model folder needs it")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path}: invalid JSON ({error})") from None


def detect_family(path: Path) -> ModelFamily:
    """The family of a base model on disk, a diffusers folder or a ``.safetensors`` file, from its configs or its
    header only (no tensor is read): for checks made before a run, such as the sizes its previews may have."""
    if path.is_dir():
        return detect_diffusers_family(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys, metadata = list(handle.keys()), dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(f"{path}: not a diffusers folder or a readable .safetensors file ({error})") from None
    return detect_original_family(path, keys, metadata)
