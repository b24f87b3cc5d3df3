"""Stable Diffusion model families as data.

Everything the rest of Furnace needs to know about a base model's family lives in one record: how to recognise it,
how its latents are scaled, what its UNet predicts, which text encoders it has and how their output is used, which
modules LoRA targets and how the kohya/A1111 file names them. Code asks the record instead of branching on names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from library.models.tokenizer import END_TOKEN

PredictionType = Literal["epsilon", "v_prediction"]
FAMILY_NAMES = ("sd1", "sd2", "sd2-v", "sdxl")


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder of a family and how its output conditions the UNet."""

    component: str  # attribute / diffusers sub-folder name: "text_encoder" or "text_encoder_2"
    architecture: Literal["CLIPTextModel", "CLIPTextModelWithProjection"]
    pad_token: str  # CLIP-L pads with the end token, OpenCLIP with "!"
    hidden_act: Literal["quick_gelu", "gelu"]  # quick_gelu = OpenAI CLIP-L, gelu = OpenCLIP
    lora_prefix: str  # kohya key prefix of this encoder's LoRA modules
    original_prefix: str  # key prefix in an original-layout single file
    # Which hidden state conditions the UNet when clip_skip == 1: -1 = last layer, -2 = penultimate.
    hidden_state_index: int
    # Whether the final LayerNorm is applied to that hidden state (SD1/SD2 yes; SDXL uses the raw penultimate state).
    apply_final_layer_norm: bool
    clip_skip_applies: bool  # SDXL ignores clip_skip: it always uses the penultimate layer


@dataclass(frozen=True)
class ModelFamily:
    """A base-model family record (see module docstring)."""

    name: str
    title: str
    prediction_type: PredictionType
    latent_scaling_factor: float
    default_resolution: int
    text_encoders: tuple[TextEncoderSpec, ...]
    clip_skip_meaning: str
    # Keys whose presence in an original-layout state dict identifies the family (any one suffices).
    original_marker_keys: tuple[str, ...]
    pipeline_class: str  # diffusers pipeline class for sampling and for saving a diffusers folder
    ss_base_model_version: str  # value of ss_base_model_version in LoRA metadata
    modelspec_architecture: str  # modelspec.architecture of a full checkpoint ("/lora" is appended for LoRAs)
    # Noise schedule used for training (the DDPM schedule every SD family was trained with).
    scheduler_config: Mapping[str, object] = field(default_factory=dict)
    unet_lora_prefix: str = "lora_unet_"
    unet_lora_naming: Literal["diffusers", "sgm"] = "diffusers"  # SDXL files use the original SGM block names
    # Module classes whose Linear / 1x1-conv children get LoRA by default (searched by library/networks/targets.py).
    unet_target_classes: tuple[str, ...] = ("Transformer2DModel",)
    unet_conv_target_classes: tuple[str, ...] = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
    text_encoder_target_classes: tuple[str, ...] = ("CLIPAttention", "CLIPMLP")
    # UNet attention heads are not visible in weights: SD1 uses 8 heads, later families a head width of 64.
    unet_heads_rule: Literal["eight_heads", "head_dim_64"] = "head_dim_64"

    @property
    def is_v_prediction(self) -> bool:
        return self.prediction_type == "v_prediction"

    @property
    def lora_architecture(self) -> str:
        return f"{self.modelspec_architecture}/lora"

    @property
    def hypernetwork_architecture(self) -> str:
        return f"{self.modelspec_architecture}/hypernetwork"


def _ddpm_schedule(prediction_type: PredictionType) -> dict[str, object]:
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "prediction_type": prediction_type,
    }


_CLIP_L = TextEncoderSpec(
    component="text_encoder",
    architecture="CLIPTextModel",
    pad_token=END_TOKEN,
    hidden_act="quick_gelu",
    lora_prefix="lora_te_",
    original_prefix="cond_stage_model.transformer.",
    hidden_state_index=-1,
    apply_final_layer_norm=True,
    clip_skip_applies=True,
)

_OPENCLIP_H = TextEncoderSpec(
    component="text_encoder",
    architecture="CLIPTextModel",
    pad_token="!",
    hidden_act="gelu",
    lora_prefix="lora_te_",
    original_prefix="cond_stage_model.model.",
    hidden_state_index=-1,
    apply_final_layer_norm=True,
    clip_skip_applies=True,
)

_SDXL_CLIP_L = TextEncoderSpec(
    component="text_encoder",
    architecture="CLIPTextModel",
    pad_token=END_TOKEN,
    hidden_act="quick_gelu",
    lora_prefix="lora_te1_",
    original_prefix="conditioner.embedders.0.transformer.",
    hidden_state_index=-2,
    apply_final_layer_norm=False,
    clip_skip_applies=False,
)

_SDXL_OPENCLIP_BIGG = TextEncoderSpec(
    component="text_encoder_2",
    architecture="CLIPTextModelWithProjection",
    pad_token="!",
    hidden_act="gelu",
    lora_prefix="lora_te2_",
    original_prefix="conditioner.embedders.1.model.",
    hidden_state_index=-2,
    apply_final_layer_norm=False,
    clip_skip_applies=False,
)

_SD2_MARKERS = ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",)
_SD2_CLIP_SKIP = (
    "clip_skip N conditions on the text encoder's N-th hidden state from the end, passed through the final "
    "LayerNorm (the diffusers SD2 encoder already stops one layer early, as SD2 was trained)."
)

SD1 = ModelFamily(
    name="sd1",
    title="Stable Diffusion 1.x",
    prediction_type="epsilon",
    latent_scaling_factor=0.18215,
    default_resolution=512,
    text_encoders=(_CLIP_L,),
    clip_skip_meaning=(
        "clip_skip N conditions on the CLIP-L hidden state N layers from the end, passed through the final "
        "LayerNorm (2 = the penultimate layer, as NovelAI-style anime models expect)."
    ),
    original_marker_keys=(
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "cond_stage_model.transformer.encoder.layers.0.self_attn.q_proj.weight",
    ),
    pipeline_class="StableDiffusionPipeline",
    ss_base_model_version="sd_v1",
    modelspec_architecture="stable-diffusion-v1",
    scheduler_config=_ddpm_schedule("epsilon"),
    unet_heads_rule="eight_heads",
)

SD2 = ModelFamily(
    name="sd2",
    title="Stable Diffusion 2.x (epsilon, 512)",
    prediction_type="epsilon",
    latent_scaling_factor=0.18215,
    default_resolution=512,
    text_encoders=(_OPENCLIP_H,),
    clip_skip_meaning=_SD2_CLIP_SKIP,
    original_marker_keys=_SD2_MARKERS,
    pipeline_class="StableDiffusionPipeline",
    ss_base_model_version="sd_v2",
    modelspec_architecture="stable-diffusion-v2-512",
    scheduler_config=_ddpm_schedule("epsilon"),
)

SD2_V = ModelFamily(
    name="sd2-v",
    title="Stable Diffusion 2.x (v-prediction, 768)",
    prediction_type="v_prediction",
    latent_scaling_factor=0.18215,
    default_resolution=768,
    text_encoders=(_OPENCLIP_H,),
    clip_skip_meaning=_SD2_CLIP_SKIP,
    original_marker_keys=_SD2_MARKERS,
    pipeline_class="StableDiffusionPipeline",
    ss_base_model_version="sd_v2_v",
    modelspec_architecture="stable-diffusion-v2-768-v",
    scheduler_config=_ddpm_schedule("v_prediction"),
)

SDXL = ModelFamily(
    name="sdxl",
    title="Stable Diffusion XL 1.0",
    prediction_type="epsilon",
    latent_scaling_factor=0.13025,
    default_resolution=1024,
    text_encoders=(_SDXL_CLIP_L, _SDXL_OPENCLIP_BIGG),
    clip_skip_meaning=(
        "ignored: SDXL always conditions on the penultimate hidden states of both encoders (no final LayerNorm) "
        "plus the pooled, projected output of the second."
    ),
    original_marker_keys=("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",),
    pipeline_class="StableDiffusionXLPipeline",
    ss_base_model_version="sdxl_base_v1-0",
    modelspec_architecture="stable-diffusion-xl-v1-base",
    scheduler_config=_ddpm_schedule("epsilon"),
    unet_lora_naming="sgm",
)

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (SD1, SD2, SD2_V, SDXL)}


def get_family(name: str) -> ModelFamily:
    """Look a family up by name, with a message that lists the valid names."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}") from None
