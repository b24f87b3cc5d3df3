"""Natural-language captioning models behind one small interface.

A captioner is built from a local model folder and maps a batch of RGB images to one sentence
each. New model kinds (Florence-2, ...) register a builder in :data:`CAPTIONERS`; the ``caption``
command and its ``--kind`` option pick them up without other changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from preprocess.common import UsageError

logger = logging.getLogger(__name__)

Captioner = Callable[[list[Image.Image]], list[str]]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding options common to generative captioners."""

    max_length: int = 75
    min_length: int = 5
    num_beams: int = 1
    device: str = "cpu"


def require_model_folder(model_dir: Path, required: tuple[str, ...], download_hint: str) -> None:
    """Fail with what to download and where, unless ``model_dir`` holds the ``required`` files."""
    missing = [name for name in required if not (model_dir / name).is_file()]
    if missing:
        raise UsageError(
            f"captioning model not found: {model_dir} lacks {', '.join(missing)}. {download_hint} "
            f"and put the files in {model_dir}"
        )


def load_blip(model_dir: Path, settings: GenerationSettings) -> Captioner:
    """A BLIP captioner (``BlipForConditionalGeneration``) from a saved model + processor folder."""
    require_model_folder(
        model_dir,
        ("config.json",),
        "Download a BLIP captioning model folder (config.json, model.safetensors, the processor and "
        "tokenizer files; for example Salesforce/blip-image-captioning-large on Hugging Face)",
    )
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, BlipForConditionalGeneration, BlipProcessor

    try:
        processor = BlipProcessor(
            image_processor=AutoImageProcessor.from_pretrained(model_dir, backend="pil", local_files_only=True),
            tokenizer=AutoTokenizer.from_pretrained(model_dir, local_files_only=True),
        )
        model = BlipForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UsageError(f"{model_dir}: cannot load the BLIP model ({error})") from None
    model = model.to(settings.device).eval()

    def caption(images: list[Image.Image]) -> list[str]:
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(settings.device)
        with torch.inference_mode():
            tokens = model.generate(
                pixel_values=pixels,
                max_length=settings.max_length,
                min_length=settings.min_length,
                num_beams=settings.num_beams,
            )
        return [text.strip() for text in processor.batch_decode(tokens, skip_special_tokens=True)]

    return caption


CAPTIONERS: dict[str, Callable[[Path, GenerationSettings], Captioner]] = {"blip": load_blip}
"""Captioner builders by the name ``caption --kind`` accepts."""
