"""A1111 hypernetworks (train_hypernetwork.py): the shape of the small MLPs on the attention's key and value inputs.

The names and choices are A1111's ("Create hypernetwork"), so a user moving a recipe over finds the same knobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from .fields import SECTION_CONFIG, OptionalPath, Problem, canonical_choice, raise_problems

ACTIVATIONS = (
    "linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid",
    "celu", "gelu", "hardshrink", "hardsigmoid", "hardswish", "hardtanh", "logsigmoid", "mish", "prelu",
    "relu6", "rrelu", "selu", "silu", "softplus", "softshrink", "softsign", "tanhshrink",
)
"""A1111's activation names: its seven named ones ("swish" is torch's Hardswish there) and torch's element-wise
activation modules by their lower-case class names, as A1111 lists them (but GLU, which halves the width and so
cannot sit in the MLP)."""
WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
MAX_LAYERS = 16
MAX_MULTIPLIER = 16.0


def _comma_separated(value: Any) -> Any:
    """A1111 types structures as "1, 2, 1"; a single number is a list of one; TOML lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return value


Structure = Annotated[list[float], BeforeValidator(_comma_separated)]
Sizes = Annotated[list[int], BeforeValidator(_comma_separated)]
MAX_WIDTH = 16384


class HypernetworkSection(BaseModel):
    """The hypernetwork's MLPs: one pair (key, value) per context width of the model."""

    model_config = SECTION_CONFIG

    network_weights: OptionalPath = Field(
        None,
        description="A hypernetwork file (.pt, A1111's, or .safetensors) to continue training from, as "
        "network.network_weights is for a LoRA: its MLP shape and widths are the run's (set the shape options below "
        "only to what the file has). The saved files' A1111 'step' counts on from the file's, as A1111 counts a "
        "hypernetwork's steps; max_train_steps, the file names' step and ss_steps count this run's steps.",
    )
    enable_sizes: Sizes | None = Field(
        None,
        max_length=MAX_LAYERS,
        description="The widths that get a key/value MLP pair (A1111's 'Modules': 768, 320, 640, 1280, 1024): an "
        "attention layer's key/value input width, the text context for cross-attention (768 SD1, 1024 SD2, 2048 "
        "SDXL), the features for self-attention (320, 640, 1280 in SD1/SD2). Unset: the text-context width alone.",
    )
    layer_structure: Structure = Field(
        [1.0, 2.0, 1.0],
        min_length=2,
        max_length=MAX_LAYERS,
        description="Layer widths as multiples of the context width, starting and ending with 1 (A1111's "
        "'1, 2, 1': context -> 2x -> context).",
    )
    activation_func: Annotated[Literal[ACTIVATIONS], canonical_choice(ACTIVATIONS)] = Field(
        "linear",
        title="Activation function",
        description="Activation after each layer but the last (A1111's names; 'swish' is Hardswish)."
    )
    activate_output: bool = Field(False, description="Also apply the activation after the last layer.")
    weight_init: Annotated[Literal[WEIGHT_INITS], canonical_choice(WEIGHT_INITS)] = Field(
        "Normal",
        description="Initial weights: 'Normal' (std 0.01, zero biases), Xavier or Kaiming (uniform or normal, zero "
        "biases).",
    )
    add_layer_norm: bool = Field(False, description="A LayerNorm after each layer.")
    use_dropout: bool = Field(False, description="Dropout between layers while training (never in previews).")
    dropout_structure: Structure | None = Field(
        None,
        max_length=MAX_LAYERS,
        description="use_dropout: the dropout probability after each layer, one number per layer_structure entry, "
        "first and last 0 (A1111's '0, 0.3, 0'); unset = 0.3 after every hidden layer but the last "
        "(last_layer_dropout adds it there).",
    )
    last_layer_dropout: bool = Field(
        False, description="use_dropout without dropout_structure: also drop out after the last hidden layer."
    )

    @model_validator(mode="after")
    def _consistent(self) -> HypernetworkSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        sizes = self.enable_sizes
        if sizes is not None and (not sizes or len(set(sizes)) != len(sizes) or not all(0 < w <= MAX_WIDTH for w in sizes)):
            yield "enable_sizes", f"give distinct widths from 1 to {MAX_WIDTH} (A1111's '768, 320, 640, 1280')"
        structure = self.layer_structure
        if structure[0] != 1 or structure[-1] != 1:
            yield "layer_structure", "must start and end with 1 (the MLP maps the context back to its own width)"
        if not all(0 < width <= MAX_MULTIPLIER for width in structure):
            yield "layer_structure", f"each multiplier must be above 0 and at most {MAX_MULTIPLIER:g}"
        dropout = self.dropout_structure
        if dropout is None:
            return
        if not self.use_dropout:
            yield "dropout_structure", "is used only with hypernetwork.use_dropout = true; set that or unset this"
        if len(dropout) != len(structure):
            yield "dropout_structure", f"needs one number per layer_structure entry ({len(structure)})"
        elif dropout[0] != 0 or dropout[-1] != 0 or not all(0 <= p < 1 for p in dropout):
            yield "dropout_structure", "must start and end with 0, each probability from 0 up to (not incl.) 1"
