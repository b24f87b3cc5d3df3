"""Base-model families as data.

Everything the rest of Furnace needs to know about a base model's family lives in one record: how to recognise it,
which module denoises (a UNet for Stable Diffusion, a transformer for DiT families such as FLUX.1) and what it
predicts, how latents are scaled and shifted, which text encoders it has and how their output is used, which
modules LoRA targets and how the kohya/A1111 file names them. Code asks the record instead of branching on names.
docs/families.md says how a family is added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from library.models.tokenizer import END_TOKEN

PredictionType = Literal["epsilon", "v_prediction", "flow_matching"]
FAMILY_NAMES = ("sd1", "sd2", "sd2-v", "sdxl", "flux1-dev", "flux1-schnell")
# How a family's original-layout (non-diffusers) files are laid out: "ldm" = the Stable Diffusion checkpoints
# (model.diffusion_model UNet, first_stage_model VAE, cond_stage_model/conditioner encoders); "bfl" = Black Forest
# Labs' FLUX.1 files, split (transformer, ae, clip_l, t5xxl) or joined in one ComfyUI-style checkpoint.
OriginalLayout = Literal["ldm", "bfl"]


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder of a family and how its output conditions the UNet."""

    component: str  # attribute / diffusers sub-folder name: "text_encoder" or "text_encoder_2"
    architecture: Literal["CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel"]
    pad_token: str  # CLIP-L pads with the end token, OpenCLIP with "!", T5 with "<pad>"
    # quick_gelu = OpenAI CLIP-L, gelu = OpenCLIP, gated-gelu = T5 v1.1 (its feed_forward_proj)
    hidden_act: Literal["quick_gelu", "gelu", "gated-gelu"]
    lora_prefix: str  # kohya key prefix of this encoder's LoRA modules
    original_prefix: str  # key prefix in an original-layout single file
    # Which hidden state conditions the UNet when clip_skip == 1: -1 = last layer, -2 = penultimate.
    hidden_state_index: int
    # Whether the final LayerNorm is applied to that hidden state (SD1/SD2 yes; SDXL uses the raw penultimate state).
    apply_final_layer_norm: bool
    clip_skip_applies: bool  # SDXL ignores clip_skip: it always uses the penultimate layer
    tokenizer: Literal["clip", "t5"] = "clip"
    max_length: int = 77  # tokens per caption (T5: FLUX.1-dev was trained with 512, schnell with 256)
    # sd-scripts' option naming this encoder's separate file (FLUX.1: "clip_l", "t5xxl"); None = always in the model
    split_file_key: str | None = None
    # What the denoiser reads from this encoder: "sequence" = its hidden states (concatenated on the width axis with
    # the other sequence encoders'; plus the projected pooled output when the encoder has a projection, as SDXL's
    # second), "pooled" = only its pooled output (FLUX.1's CLIP-L)
    conditions: Literal["sequence", "pooled"] = "sequence"
    # Whether dreambooth.train_text_encoder fine-tunes it (FLUX.1's T5-XXL, 4.7 B parameters, stays frozen)
    fine_tuned: bool = True


@dataclass(frozen=True)
class BlockKind:
    """A kind of denoiser block LoRA training can select by index (FLUX.1's double and single blocks)."""

    class_name: str  # the block's module class (one of ``unet_target_classes``)
    count_key: str  # the denoiser config key holding how many there are


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
    # Noise schedule used for training: the DDPM schedule every SD family was trained with, a flow-matching
    # schedule for DiT families; ``scheduler_class`` names the diffusers class it configures.
    scheduler_config: Mapping[str, object] = field(default_factory=dict)
    scheduler_class: str = "DDPMScheduler"
    # The denoiser: its component name (attribute and diffusers sub-folder) and diffusers class.
    denoiser: str = "unet"
    denoiser_class: str = "UNet2DConditionModel"
    latent_channels: int = 4
    latent_shift_factor: float = 0.0  # subtracted before scaling (FLUX.1's VAE has one; SD's do not)
    resolution_multiple: int = 8  # image sides must be multiples of this (VAE x8; FLUX.1 also packs 2x2 latents)
    # Latent pixels per token side when the denoiser reads latents as a packed sequence (FLUX.1: 2); 1 = unpacked
    latent_patch_size: int = 1
    original_layout: OriginalLayout = "ldm"
    guidance_embedded: bool = False  # guidance-distilled (FLUX.1-dev): the denoiser takes the guidance scale as input
    # How the pipeline applies a CFG scale: "classifier_free" = its guidance_scale, always against a negative prompt
    # (empty = unconditional; Stable Diffusion); "true_cfg" = its true_cfg_scale, only for a prompt with a negative
    # prompt, guidance_scale then being the embedded guidance (FluxPipeline)
    cfg_kind: Literal["classifier_free", "true_cfg"] = "classifier_free"
    vae_split_file_key: str | None = None  # sd-scripts' option naming a separate VAE file the family needs ("ae")
    unet_lora_prefix: str = "lora_unet_"
    # LoRA files' denoiser names: diffusers paths (SD1/SD2), the original SGM blocks (SDXL), or BFL's modules with
    # q, k, v fused (FLUX.1: networks/bfl_lora.py)
    unet_lora_naming: Literal["diffusers", "sgm", "bfl"] = "diffusers"
    # Module classes whose Linear / 1x1-conv children get LoRA by default (searched by library/networks/targets.py):
    # FLUX.1's are its double and single blocks, i.e. attention (to_q/k/v/out, add_*_proj, to_add_out), MLPs (ff,
    # ff_context, proj_mlp, proj_out) and modulation (norm*.linear).
    unet_target_classes: tuple[str, ...] = ("Transformer2DModel",)
    unet_conv_target_classes: tuple[str, ...] = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
    # Blocks that network.train_blocks / train_<kind>_block_indices select, by sd-scripts' kind name ("double",
    # "single"); none = the family's blocks cannot be selected
    unet_block_kinds: Mapping[str, BlockKind] = field(default_factory=dict)
    # (T5's blocks are not listed: FLUX.1's T5 gets no LoRA, its CLIP-L does when text encoders train.)
    text_encoder_target_classes: tuple[str, ...] = ("CLIPAttention", "CLIPMLP")
    # UNet attention heads are not visible in weights: SD1 uses 8 heads, later families a head width of 64.
    unet_heads_rule: Literal["eight_heads", "head_dim_64"] = "head_dim_64"

    @property
    def split_file_keys(self) -> tuple[str, ...]:
        """sd-scripts' options for the separate files a model of this family may come as (VAE first)."""
        keys = [self.vae_split_file_key] + [spec.split_file_key for spec in self.text_encoders]
        return tuple(key for key in keys if key)

    def fitted_size(self, width: int, height: int) -> tuple[int, int]:
        """An image size this family renders: each side floored to ``resolution_multiple`` (never below it)."""
        multiple = self.resolution_multiple
        return max(multiple, width // multiple * multiple), max(multiple, height // multiple * multiple)

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

_FLUX_CLIP_L = TextEncoderSpec(
    component="text_encoder",
    architecture="CLIPTextModel",
    pad_token=END_TOKEN,
    hidden_act="quick_gelu",
    lora_prefix="lora_te1_",
    original_prefix="text_encoders.clip_l.transformer.",
    hidden_state_index=-1,
    apply_final_layer_norm=True,
    clip_skip_applies=False,
    split_file_key="clip_l",
    conditions="pooled",
)


def _flux_t5(max_length: int) -> TextEncoderSpec:
    return TextEncoderSpec(
        component="text_encoder_2",
        architecture="T5EncoderModel",
        pad_token="<pad>",
        hidden_act="gated-gelu",
        lora_prefix="lora_te3_",
        original_prefix="text_encoders.t5xxl.transformer.",
        hidden_state_index=-1,
        apply_final_layer_norm=True,
        clip_skip_applies=False,
        tokenizer="t5",
        max_length=max_length,
        split_file_key="t5xxl",
        fine_tuned=False,
    )


def _flow_match_schedule(dev: bool) -> dict[str, object]:
    """FLUX.1's scheduler: dev shifts sigmas by resolution (dynamic shifting), schnell uses them unshifted."""
    if not dev:
        return {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
    return {
        "num_train_timesteps": 1000,
        "shift": 3.0,
        "use_dynamic_shifting": True,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
    }


_FLUX_MARKERS = ("double_blocks.0.img_attn.qkv.weight", "model.diffusion_model.double_blocks.0.img_attn.qkv.weight")
# dev is guidance-distilled: its transformer embeds the guidance scale; schnell's has no guidance embedder.
FLUX_GUIDANCE_MARKERS = ("guidance_in.in_layer.weight", "model.diffusion_model.guidance_in.in_layer.weight")


def _flux(dev: bool) -> ModelFamily:
    variant = "dev" if dev else "schnell"
    return ModelFamily(
        name=f"flux1-{variant}",
        title=f"FLUX.1 [{variant}]",
        prediction_type="flow_matching",
        latent_scaling_factor=0.3611,
        latent_shift_factor=0.1159,
        latent_channels=16,
        latent_patch_size=2,
        default_resolution=1024,
        resolution_multiple=16,
        text_encoders=(_FLUX_CLIP_L, _flux_t5(512 if dev else 256)),
        clip_skip_meaning="ignored: FLUX.1 conditions on T5's last hidden states and CLIP-L's pooled output.",
        original_marker_keys=_FLUX_MARKERS,
        pipeline_class="FluxPipeline",
        ss_base_model_version="flux1",
        modelspec_architecture=f"flux-1-{variant}",
        scheduler_config=_flow_match_schedule(dev),
        scheduler_class="FlowMatchEulerDiscreteScheduler",
        denoiser="transformer",
        denoiser_class="FluxTransformer2DModel",
        original_layout="bfl",
        unet_lora_naming="bfl",
        guidance_embedded=dev,
        cfg_kind="true_cfg",
        vae_split_file_key="ae",
        unet_target_classes=("FluxTransformerBlock", "FluxSingleTransformerBlock"),
        unet_conv_target_classes=(),
        unet_block_kinds={"double": BlockKind("FluxTransformerBlock", "num_layers"),
                          "single": BlockKind("FluxSingleTransformerBlock", "num_single_layers")},
    )


FLUX1_DEV = _flux(dev=True)
FLUX1_SCHNELL = _flux(dev=False)

FAMILIES: dict[str, ModelFamily] = {
    family.name: family for family in (SD1, SD2, SD2_V, SDXL, FLUX1_DEV, FLUX1_SCHNELL)
}


def get_family(name: str) -> ModelFamily:
    """Look a family up by name, with a message that lists the valid names."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}") from None
