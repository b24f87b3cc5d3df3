"""How a run trains: the adapter, the optimizer and the loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from .block_selection import TRAIN_BLOCKS, BlockChoice, BlockIndices
from .fields import (
    MAX_EPOCHS,
    MAX_STEPS,
    SECTION_CONFIG,
    OptionalPath,
    Problem,
    StepsOrFraction,
    canonical_choice,
    raise_problems,
)

OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Lion8bit", "Prodigy", "Adafactor", "SGD")
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial")

_SCALARS = (bool, int, float, str)


def _check_args(args: dict[str, Any]) -> dict[str, Any]:
    """Optimizer kwargs must survive a TOML round trip: scalars or flat lists of scalars."""
    for key, value in args.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, _SCALARS) for item in items):
            raise ValueError(f"'{key}' must be a boolean, number, string or a list of them (got {value!r})")
    return args


NETWORK_MODULES = ("lora", "lokr")
EMA_SAVES = ("ema", "raw", "both")
SAVE_FORMATS = ("kohya", "diffusers")  # LoRA file layouts (library/networks/lora_layouts.py)


class NetworkSection(BlockChoice, BaseModel):
    """The adapter: LoRA (LoCon when conv_dim is set, DoRA when use_dora is on) or LyCORIS LoKr."""

    model_config = SECTION_CONFIG

    module: Literal[NETWORK_MODULES] = Field(
        "lora",
        title="Adapter type",
        description="Adapter type: 'lora' (kohya LoRA; conv_dim adds LoCon convs, use_dora makes it DoRA) or 'lokr' "
        "(LyCORIS Kronecker product; dim is the rank of its larger factor, conv_dim adapts 3x3 convs too).",
    )
    dim: int = Field(16, ge=1, le=1024, title="Rank (dim)", description="Rank of the adapter matrices (at most 1024).")
    alpha: float = Field(8.0, gt=0, le=1024, description="Scale numerator: updates are scaled by alpha / dim.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input (peft lora_dropout).")
    conv_dim: int | None = Field(
        None, ge=1, le=1024, description="Rank for 3x3 convs (LoCon, at most 1024); unset = no conv adapters."
    )
    conv_alpha: float | None = Field(
        None, gt=0, le=1024, description="Alpha for conv adapters; defaults to 1.0 with conv_dim."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    lokr_factor: int = Field(
        -1,
        ge=-1,
        le=1024,
        description="LoKr: split each dimension into factor x rest (as LyCORIS 'factor'); -1 = as square as possible.",
    )
    lokr_full_matrix: bool = Field(
        False,
        description="LoKr: store the larger Kronecker factor whole instead of as a rank-dim product (LyCORIS "
        "'full_matrix'); it is whole anyway where dim is at least half its size.",
    )
    network_weights: OptionalPath = Field(
        None, description="Adapter .safetensors to continue training from (kohya or diffusers layout)."
    )
    save_format: Literal[SAVE_FORMATS] = Field(
        "kohya",
        description="LoRA file layout: 'kohya' (lora_down/lora_up/alpha; FLUX.1 in BFL names with q, k, v fused, "
        "as sd-scripts, ComfyUI and Forge read it) or 'diffusers' (peft's lora_A/lora_B under unet. / transformer. / "
        "text_encoder., the alphas in the lora_adapter_metadata entry, as diffusers' save_lora_weights writes and "
        "its load_lora_weights reads them for SD1, SD2, SDXL and FLUX.1; ComfyUI ignores that entry and applies "
        "alpha = rank).",
    )
    train_blocks: Literal[TRAIN_BLOCKS] = Field(
        "all",
        description="FLUX.1: which transformer blocks get adapters: 'all', 'double' (the double-stream blocks only) or "
        "'single' (the single-stream blocks only); sd-scripts' network_args train_blocks.",
    )
    train_double_block_indices: BlockIndices = Field(
        "all",
        description="FLUX.1: which double blocks get adapters: 'all', 'none', or indices and ranges from 0 such as "
        "'0,1,8-12' (FLUX.1 has 19); sd-scripts' network_args train_double_block_indices.",
    )
    train_single_block_indices: BlockIndices = Field(
        "all",
        description="FLUX.1: which single blocks get adapters: 'all', 'none', or indices and ranges from 0 such as "
        "'3,20-25' (FLUX.1 has 38); sd-scripts' network_args train_single_block_indices.",
    )
    train_unet_only: bool = Field(False, description="Train the UNet adapter only; the text encoder stays frozen.")
    train_text_encoder_only: bool = Field(False, description="Train the text encoder adapter only.")
    unet_lr: float | None = Field(None, gt=0, le=1, description="UNet learning rate; unset = optimizer.learning_rate.")
    text_encoder_lr: float | None = Field(
        None, ge=0, le=1, description="Text encoder learning rate; unset = optimizer.learning_rate, 0 = frozen."
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Keep an exponential moving average (EMA) of the adapter weights in fp32 with this decay per "
        "update (e.g. 0.999); 0 = off. A full fine-tune has its own: dreambooth.use_ema.",
    )
    ema_update_every: int = Field(
        1, ge=1, le=10_000, description="Update the EMA every N optimizer steps (the decay applies per update)."
    )
    ema_warmup: bool = Field(
        True,
        description="Ramp the EMA decay up as min(ema_decay, (1 + n) / (10 + n)) after n updates, starting from the "
        "weights after the first update; false = ema_decay from the start, averaging from the initial weights.",
    )
    ema_save: Literal[EMA_SAVES] = Field(
        "ema",
        description="What the saved LoRA files hold with an EMA: 'ema', 'raw' (the trained weights), or 'both': "
        "the EMA in <output_name>*.safetensors and the raw weights in <output_name>-raw*.safetensors.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_conv_alpha(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("conv_dim") is not None and data.get("conv_alpha") is None:
            return {**data, "conv_alpha": 1.0}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        if self.train_unet_only and self.train_text_encoder_only:
            yield "train_text_encoder_only", "cannot be combined with network.train_unet_only"
        if self.train_text_encoder_only and self.text_encoder_lr == 0:
            yield "text_encoder_lr", "0 (frozen) with network.train_text_encoder_only leaves nothing to train"
        if self.conv_alpha is not None and self.conv_dim is None:
            yield "conv_alpha", "needs network.conv_dim (the conv adapters' rank)"
        if self.train_unet_only and not self.selects_blocks:
            yield "train_blocks", (f"{self.train_blocks!r} with the block indices given selects no block, and "
                                   "network.train_unet_only leaves nothing else to train")
        if self.lokr_factor == 0:
            yield "lokr_factor", "must be -1 (automatic) or >= 1 (got 0)"
        if not self.ema_decay:
            for key, default in (("ema_update_every", 1), ("ema_warmup", True), ("ema_save", "ema")):
                if getattr(self, key) != default:
                    yield key, "needs network.ema_decay > 0 (the EMA is off)"
        if self.module == "lokr":
            if self.use_dora:
                yield "use_dora", "cannot be combined with network.module = 'lokr' (DoRA is for LoRA adapters)"
            if self.dropout:
                yield "dropout", "is not applied by LoKr adapters; set it to 0 with network.module = 'lokr'"
        else:
            if self.lokr_factor != -1:
                yield "lokr_factor", "needs network.module = 'lokr'"
            if self.lokr_full_matrix:
                yield "lokr_full_matrix", "needs network.module = 'lokr'"


class OptimizerSection(BaseModel):
    """Optimizer and learning-rate schedule."""

    model_config = SECTION_CONFIG

    type: Annotated[Literal[OPTIMIZERS], canonical_choice(OPTIMIZERS)] = Field(
        "AdamW",
        title="Optimizer",
        description="Optimizer; the 8bit variants use bitsandbytes."
    )
    learning_rate: float = Field(1e-4, gt=0, le=10, description="Base learning rate (Prodigy expects about 1.0).")
    weight_decay: float = Field(0.01, ge=0, le=1, description="Decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/Lion beta coefficients.")
    eps: float = Field(1e-8, gt=0, le=1e-2, description="Adam epsilon.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    args: Annotated[dict[str, Any], AfterValidator(_check_args)] = Field(
        {}, description="Extra keyword arguments passed to the optimizer as is."
    )
    lr_scheduler: Annotated[Literal[SCHEDULERS], canonical_choice(SCHEDULERS)] = Field(
        "constant", description="Learning-rate schedule."
    )
    lr_warmup_steps: StepsOrFraction = Field(
        0.0,
        ge=0,
        le=MAX_STEPS,
        description=f"Linear warm-up steps (at most {MAX_STEPS:,}); a value below 1 is a fraction of the total steps.",
    )
    lr_scheduler_num_cycles: int = Field(1, ge=1, le=1000, description="Restarts for cosine_with_restarts.")
    lr_scheduler_power: float = Field(1.0, gt=0, le=10, description="Exponent of the polynomial schedule.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 turns clipping off.")

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        if any(not 0 <= beta < 1 for beta in self.betas):
            yield "betas", f"each beta must be in [0, 1) (got {list(self.betas)})"
        if self.lr_scheduler == "constant" and self.lr_warmup_steps:
            yield "lr_warmup_steps", "is ignored by the 'constant' scheduler: use 'constant_with_warmup' or set 0"


class TrainingSection(BaseModel):
    """The training loop: length, precision, noise and loss."""

    model_config = SECTION_CONFIG

    max_train_steps: int = Field(
        1600,
        title="Training steps",
        ge=1,
        le=MAX_STEPS,
        description=f"Total optimizer steps, at most {MAX_STEPS:,} (ignored when max_train_epochs is set).",
    )
    max_train_epochs: int | None = Field(
        None,
        title="Training epochs",
        ge=1,
        le=MAX_EPOCHS,
        description=f"Total epochs, at most {MAX_EPOCHS:,}; when set it wins over max_train_steps.",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed for noise, shuffling and dropout.")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="Autocast precision of the forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Batches accumulated per optimizer step.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory (slower).")
    skip_memory_check: bool = Field(
        False,
        description="Start even when the memory estimate made before loading exceeds what the machine has "
        "available (the estimate is a lower bound; see docs/reliability.md).",
    )
    noise_offset: float = Field(0.0, ge=0, le=1, description="Offset noise strength; helps very dark/bright images.")
    multires_noise_iterations: int = Field(
        0, ge=0, le=20, description="Pyramid (multi-resolution) noise levels; 0 = off."
    )
    multires_noise_discount: float = Field(0.3, ge=0, le=1, description="Strength decay per pyramid noise level.")
    min_snr_gamma: float | None = Field(
        None, ge=0, le=100, description="Min-SNR loss weighting gamma (5 is usual); unset or 0 = off."
    )
    loss_type: Literal["l2", "huber", "smooth_l1"] = Field("l2", description="Loss between predicted and target noise.")
    huber_c: float = Field(0.1, gt=0, le=10, description="Huber / smooth-L1 threshold.")
    resume: OptionalPath = Field(None, description="A saved state/ folder to resume from, or 'latest' for the newest.")
    validation_every_n_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Compute validation loss every N steps."
    )
    channels_last: bool = Field(
        False,
        description="Keep the UNet's weights in channels-last memory format (a speed option: whether it helps "
        "depends on the hardware).",
    )
    torch_compile: bool = Field(
        False,
        description="Compile the UNet with torch.compile (inductor); on CPU it needs a C++ compiler, and the first "
        "steps pay the one-off compile time.",
    )
    latents_per_encode: int = Field(
        1, ge=1, le=256, description="Images per VAE call while caching latents (at most 256); each extra image "
        "adds its VAE activations to the peak memory.",
    )
    cpu_threads: int = Field(
        0, ge=0, le=1024, description="Intra-op threads for CPU math (torch.set_num_threads); 0 = torch's default."
    )
    cpu_interop_threads: int = Field(
        0, ge=0, le=1024, description="Inter-op threads (torch.set_num_interop_threads); 0 = torch's default."
    )
