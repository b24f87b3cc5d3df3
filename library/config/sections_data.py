"""What a run trains on: the base model and the dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from .fields import MAX_SIDE, MIN_SIDE, SECTION_CONFIG, FileSuffix, OptionalPath, Problem, Size, raise_problems


class ModelSection(BaseModel):
    """The base model to adapt."""

    model_config = SECTION_CONFIG

    pretrained_model_name_or_path: str = Field(
        "",
        title="Base model",
        description="Base model: a local diffusers folder or a single .safetensors/.ckpt file (FLUX.1: the "
        "transformer file, e.g. flux1-dev.safetensors, or a ComfyUI-style checkpoint).",
    )
    family: Literal["auto", "sd1", "sd2", "sd2-v", "sdxl", "flux1-dev", "flux1-schnell"] = Field(
        "auto", description="Model family; 'auto' detects it from the weights ('sd2-v' = SD2 v-prediction)."
    )
    vae: OptionalPath = Field(None, description="Separate VAE file or folder replacing the model's own.")
    ae: OptionalPath = Field(
        None, description="FLUX.1: the autoencoder file (ae.safetensors) beside a transformer file."
    )
    clip_l: OptionalPath = Field(None, description="FLUX.1: the CLIP-L text encoder file (clip_l.safetensors).")
    t5xxl: OptionalPath = Field(None, description="FLUX.1: the T5-XXL text encoder file (e.g. t5xxl_fp16.safetensors).")
    clip_skip: int = Field(1, ge=1, le=12, description="Use the output of the N-th text encoder layer from the end.")
    config_dir: OptionalPath = Field(
        None,
        description="Diffusers folder supplying the model configs (and FLUX.1's T5 tokenizer, tokenizer_2/) when "
        "loading a single file offline.",
    )
    fp8_base: bool = Field(
        False,
        description="Store the frozen UNet and text encoders in float8 (e4m3), up-cast per layer for compute: "
        "about half the weight memory of bf16. LoRA runs only.",
    )

    def split_files(self) -> dict[str, str | None]:
        """The separate files of a family that comes split, by the option names the loader takes."""
        return {"ae": self.ae, "clip_l": self.clip_l, "t5xxl": self.t5xxl}


class DatasetSection(BaseModel):
    """Images, captions and how batches are built from them."""

    model_config = SECTION_CONFIG

    train_data_dir: OptionalPath = Field(
        None, title="Dataset folder", description="Folder of 'N_name' repeat folders of images + captions."
    )
    reg_data_dir: OptionalPath = Field(
        None,
        title="Regularization images folder",
        description="Folder of 'N_name' repeat folders of regularization images.",
    )
    dataset_config: OptionalPath = Field(None, description="sd-scripts dataset TOML; replaces train_data_dir.")
    resolution: Size = Field(
        (512, 512),
        description=f"Training size: an integer, 'W,H' or [W, H]; each side a multiple of 8 from {MIN_SIDE} to "
        f"{MAX_SIDE} pixels.",
    )
    batch_size: int = Field(1, ge=1, le=256, description="Images per step per device (at most 256).")
    enable_bucket: bool = Field(False, description="Group images by aspect ratio instead of cropping to square.")
    min_bucket_reso: int = Field(
        256, ge=MIN_SIDE, le=MAX_SIDE, description=f"Smallest bucket side in pixels ({MIN_SIDE} to {MAX_SIDE})."
    )
    max_bucket_reso: int = Field(
        1024, ge=MIN_SIDE, le=MAX_SIDE, description=f"Largest bucket side in pixels ({MIN_SIDE} to {MAX_SIDE})."
    )
    bucket_reso_steps: int = Field(64, ge=8, le=256, multiple_of=8, description="Bucket side granularity in pixels.")
    bucket_no_upscale: bool = Field(False, description="Never upscale an image to fit a bucket.")
    caption_extension: FileSuffix = Field(
        ".txt", min_length=2, description="Extension of the caption file beside each image."
    )
    shuffle_caption: bool = Field(False, description="Shuffle comma-separated tags every step.")
    keep_tokens: int = Field(0, ge=0, le=225, description="Leading tags kept in place when shuffling or dropping.")
    keep_tokens_separator: str = Field(
        "", description="Tags before this separator are kept fixed (overrides keep_tokens)."
    )
    caption_prefix: str = Field(
        "", title="Trigger word (caption prefix)", description="Text prepended to every caption, e.g. the trigger word."
    )
    caption_suffix: str = Field("", description="Text appended to every caption.")
    caption_dropout_rate: float = Field(0.0, ge=0.0, le=1.0, description="Probability of training on an empty caption.")
    caption_tag_dropout_rate: float = Field(0.0, ge=0.0, le=1.0, description="Probability of dropping each tag.")
    flip_aug: bool = Field(False, description="Randomly flip images horizontally.")
    color_aug: bool = Field(False, description="Randomly shift hue/saturation (incompatible with cache_latents).")
    random_crop: bool = Field(False, description="Random instead of center crop (incompatible with cache_latents).")
    num_repeats: int = Field(1, ge=1, le=10000, description="Repeats for image folders without an 'N_' prefix.")
    prior_loss_weight: float = Field(1.0, ge=0.0, le=10.0, description="Loss weight of regularization images.")
    masked_loss: bool = Field(
        False,
        description="Weight the loss per pixel by a mask (white = learn, black = ignore): the image's own file in "
        "mask_dir, or else its alpha channel. Class/regularization images are not masked.",
    )
    mask_dir: OptionalPath = Field(
        None,
        description="Folder of greyscale masks, one per training image with the same file name stem (for 'N_name' "
        "folders: mask_dir/N_name/ when it exists). Needs masked_loss.",
    )
    cache_latents: bool = Field(False, description="Encode images with the VAE once, before training.")
    cache_latents_to_disk: bool = Field(
        False, description="Keep cached latents on disk for later runs (implies cache_latents)."
    )
    cache_text_encoder_outputs: bool = Field(
        False, description="Encode captions once; needs a frozen text encoder and fixed captions."
    )
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="Stop on an unreadable image, or skip it with a warning."
    )
    validation_split: float = Field(
        0.0, ge=0.0, le=0.5, description="Fraction of training images held out for validation loss."
    )
    validation_dir: OptionalPath = Field(None, description="Folder of validation images (instead of validation_split).")
    max_token_length: Literal[75, 150, 225] = Field(
        75, description="Caption length in tokens (150/225 chunk the prompt)."
    )
    num_workers: int = Field(0, ge=0, le=64, description="Data loader worker processes; 0 loads in the main process.")

    @model_validator(mode="before")
    @classmethod
    def _disk_cache_implies_cache(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("cache_latents_to_disk") is True:
            return {**data, "cache_latents": True}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        if self.train_data_dir and self.dataset_config:
            yield "dataset_config", "set either dataset.train_data_dir or dataset.dataset_config, not both"
        if self.min_bucket_reso > self.max_bucket_reso:
            yield "min_bucket_reso", (
                f"must be <= dataset.max_bucket_reso (got {self.min_bucket_reso} > {self.max_bucket_reso})"
            )
        low, high = min(self.resolution), max(self.resolution)
        if self.enable_bucket and not self.min_bucket_reso <= low <= high <= self.max_bucket_reso:
            yield "resolution", (
                "must lie within min_bucket_reso..max_bucket_reso when enable_bucket is on "
                f"(got {list(self.resolution)}, buckets {self.min_bucket_reso}..{self.max_bucket_reso})"
            )
        if self.cache_latents and (self.color_aug or self.random_crop):
            yield "cache_latents", "cannot be combined with color_aug or random_crop (cached latents are fixed)"
        caption_randomised = self.shuffle_caption or self.caption_dropout_rate or self.caption_tag_dropout_rate
        if self.cache_text_encoder_outputs and caption_randomised:
            yield "cache_text_encoder_outputs", (
                "cannot be combined with shuffle_caption or caption dropout (cached captions are fixed)"
            )
        if self.mask_dir and not self.masked_loss:
            yield "mask_dir", "masks are used only with dataset.masked_loss = true; turn it on or remove mask_dir"
        if self.validation_split and self.validation_dir:
            yield "validation_dir", "set either dataset.validation_split or dataset.validation_dir, not both"
