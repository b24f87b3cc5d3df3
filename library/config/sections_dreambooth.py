"""DreamBooth: instance/class prompts, prior-preservation class images, and what a full fine-tune trains."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .fields import MAX_STEPS, SECTION_CONFIG, OptionalPath, Problem, raise_problems


class DreamBoothSection(BaseModel):
    """Prior preservation and full fine-tuning (train_dreambooth.py; the prompts also work for LoRA runs)."""

    model_config = SECTION_CONFIG

    train_method: Literal["full", "lora"] = Field(
        "full",
        description="train_dreambooth.py: fine-tune the full UNet ('full', written as a checkpoint) or train a LoRA "
        "('lora', shaped by the [network] section).",
    )
    instance_prompt: str | None = Field(
        None, description="Caption of instance images without a caption file, e.g. 'a photo of sks dog'."
    )
    class_prompt: str | None = Field(None, description="Prompt of the class images, e.g. 'a photo of a dog'.")
    class_data_dir: OptionalPath = Field(
        None, description="Folder of class (regularization) images for prior preservation."
    )
    num_class_images: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Generate class images with the base model until the folder holds this many (at most 100,000).",
    )
    class_generation_batch_size: int = Field(
        4, ge=1, le=64, description="Images per batch when generating (at most 64)."
    )
    class_generation_steps: int = Field(
        30, ge=1, le=1000, description="Denoising steps per generated class image (at most 1000)."
    )
    train_text_encoder: bool = Field(
        False,
        description="Full fine-tune: also train the text encoder(s); on FLUX.1 CLIP-L only (T5-XXL stays frozen).",
    )
    stop_text_encoder_training: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Full fine-tune: freeze the text encoder after this many steps."
    )
    use_ema: bool = Field(
        False, description="Full fine-tune: keep an exponential moving average of the UNet (FLUX.1: the transformer)."
    )
    ema_decay: float = Field(0.9999, gt=0, lt=1, description="EMA decay per optimizer step.")
    save_diffusers: bool = Field(
        False, description="Full fine-tune: also write a diffusers folder beside the single-file checkpoint."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DreamBoothSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        if self.num_class_images and not (self.class_data_dir and self.class_prompt):
            yield "num_class_images", "needs dreambooth.class_data_dir and dreambooth.class_prompt to generate into"
        if self.class_data_dir and not self.class_prompt:
            yield "class_prompt", "is required with dreambooth.class_data_dir (the class images' caption)"
