"""What a hypernetwork run trains and writes: A1111's hypernetwork on a frozen base, saved as A1111's ``.pt`` and as
``.safetensors`` (``networks/hypernetwork_file.py``), each save writing both under the run's file names.

The hypernetwork has one MLP pair per width of ``hypernetwork.enable_sizes`` (default: the model's text-context width,
``unet.config.cross_attention_dim``), or those of the file ``hypernetwork.network_weights`` it continues, hooked
into the UNet and registered as its submodule, so the UNet is what trains, wraps and carries the tensors into the
resume state; its parameters are the only ones that require a gradient.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import torch

from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.networks import TrainingInfo, hypernetwork_metadata, save_dtype
from library.networks.hypernetwork import (
    MODULE_NAME,
    Hypernetwork,
    HypernetworkOptions,
    attach,
    context_widths,
    default_dropout_structure,
)
from library.networks.hypernetwork_file import (
    PT_SUFFIX,
    a1111_dict,
    hypernetwork_of,
    read_hypernetwork,
    trained_steps,
    write_pt,
    write_safetensors,
)
from library.training.accelerator import Precision
from library.training.exceptions import TrainingSetupError
from library.training.lora_weights import enable_checkpointing, freeze_base
from library.training.state import register_adapter_hooks
from library.training.weights import TrainedWeights

logger = logging.getLogger(__name__)
PART = "hypernetwork"  # the optimizer group's name, logged as lr/hypernetwork
_HASH_CHUNK = 1 << 20


def hypernetwork_options(config: FurnaceConfig) -> HypernetworkOptions:
    section = config.hypernetwork
    structure = tuple(section.layer_structure)
    dropout = section.dropout_structure or default_dropout_structure(
        structure, section.use_dropout, section.last_layer_dropout
    )
    return HypernetworkOptions(
        layer_structure=structure,
        activation_func=section.activation_func,
        weight_init=section.weight_init,
        add_layer_norm=section.add_layer_norm,
        use_dropout=section.use_dropout,
        dropout_structure=tuple(dropout),
        activate_output=section.activate_output,
        last_layer_dropout=section.last_layer_dropout,
    )


def build_hypernetwork(config: FurnaceConfig, unet: torch.nn.Module) -> tuple[Hypernetwork, int]:
    """The hypernetwork to train and the steps it was trained before: read from ``hypernetwork.network_weights``
    (its shape, widths and A1111 ``step``), else new (0 steps), with a pair for each of ``enable_sizes`` (default:
    the text-context width); each width must feed an attention layer."""
    section, widths = config.hypernetwork, context_widths(unet)
    steps_before = 0
    if section.network_weights:
        path = Path(section.network_weights)
        read = read_hypernetwork(path)
        hypernetwork, steps_before = hypernetwork_of(path, read), trained_steps(path, read)
        _check_same_shape(config, hypernetwork, path)
        logger.info("continuing from the hypernetwork in %s (widths %s, trained %d steps)", path,
                    hypernetwork.widths, steps_before)
    else:
        hypernetwork = Hypernetwork(section.enable_sizes or [unet.config.cross_attention_dim], hypernetwork_options(config))
    unused = [width for width in hypernetwork.widths if width not in widths]
    if unused:
        where = f"{section.network_weights} has" if section.network_weights else "hypernetwork.enable_sizes names"
        raise TrainingSetupError(
            f"{where} width(s) {', '.join(map(str, unused))}, which no attention layer of this model takes (its "
            f"key/value inputs are {', '.join(map(str, widths))} wide); use those widths, or a file made for this model"
        )
    return hypernetwork, steps_before


def _check_same_shape(config: FurnaceConfig, hypernetwork: Hypernetwork, path: Path) -> None:
    """The [hypernetwork] shape options a config sets must be the continued file's (they cannot change it)."""
    section, wanted = config.hypernetwork, hypernetwork_options(config)
    differing = [name for name in section.model_fields_set
                 if hasattr(wanted, name) and getattr(wanted, name) != getattr(hypernetwork.options, name)]
    if section.enable_sizes is not None and sorted(section.enable_sizes) != hypernetwork.widths:
        differing.append("enable_sizes")
    if differing:
        found = {**vars(hypernetwork.options), "enable_sizes": hypernetwork.widths}
        raise TrainingSetupError(
            f"hypernetwork.network_weights: {path} was made with "
            + ", ".join(f"{name} = {found[name]}" for name in sorted(differing))
            + "; a continued hypernetwork keeps its shape, so unset those options or set them to the file's"
        )


def a1111_short_hash(path: Path) -> str | None:
    """A1111's ``sd_checkpoint``: the first 10 hex digits of the base file's sha256 (None for a diffusers folder)."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:10]


class HypernetworkWeights(TrainedWeights):
    """The hypernetwork's MLPs train; the whole base stays frozen. State = the MLP tensors."""

    saves_base_model = False
    title = "hypernetwork training"
    trains_text_encoder = False

    @staticmethod
    def load_dtypes(precision: Precision) -> tuple[torch.dtype, torch.dtype]:
        """The base is frozen whole, so it loads in the frozen dtype, as for a LoRA."""
        return precision.frozen, torch.float32

    def __init__(self, config: FurnaceConfig, model: BaseModel, precision: Precision, device: torch.device) -> None:
        self.config, self.model = config, model
        freeze_base(model, precision, device, fp8=config.model.fp8_base)
        model.unet.requires_grad_(False)
        for encoder in model.text_encoders:
            encoder.requires_grad_(False)
        hypernetwork, self.steps_before = build_hypernetwork(config, model.unet)
        self.hypernetwork = hypernetwork.to(device, torch.float32).train()
        attach(model.unet, self.hypernetwork)
        logger.info("hypernetwork: %d MLP pairs for widths %s, %s parameters", len(self.hypernetwork.pairs),
                    ", ".join(map(str, self.hypernetwork.widths)),
                    f"{sum(p.numel() for p in self.hypernetwork.parameters()):,}")
        if config.training.gradient_checkpointing:
            enable_checkpointing(model, text_encoders_too=False)
        self.named_parameters = {f"{MODULE_NAME}.{name}": param
                                 for name, param in self.hypernetwork.named_parameters()}

    def modules_to_prepare(self) -> list[torch.nn.Module]:
        """The UNet, which holds the hypernetwork (and calls it in its forward pass)."""
        return [self.model.unet]

    def param_groups(self) -> list[dict]:
        return [{"params": self.parameters(), "lr": self.config.optimizer.learning_rate, "name": PART}]

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.named_parameters.values())

    def register_state_hooks(self, accelerator) -> None:
        register_adapter_hooks(accelerator, self.named_parameters)

    def after_step(self, step: int) -> None:
        """Nothing follows an optimizer step for a hypernetwork."""

    def sync_to_step(self, step: int) -> None:
        """Nothing depends on the step count for a hypernetwork."""

    @functools.cached_property
    def _base_hash(self) -> str | None:
        return a1111_short_hash(Path(self.config.model.pretrained_model_name_or_path))

    def save(self, path: Path, info: TrainingInfo) -> None:
        """``path`` (``.safetensors``) and A1111's ``.pt`` beside it, holding the same tensors. Their A1111 ``step``
        counts on from a continued file's, as A1111's own training does; ``ss_steps`` is this run's."""
        base = Path(self.config.model.pretrained_model_name_or_path)
        saved = a1111_dict(self.hypernetwork, {
            "step": self.steps_before + info.steps,
            "name": self.config.output.output_name,
            "sd_checkpoint": self._base_hash,
            "sd_checkpoint_name": base.stem if base.is_file() else base.name,
            "optional_info": self.config.output.training_comment,
        }, save_dtype(self.config.output.save_precision))
        write_safetensors(path, saved, hypernetwork_metadata(self.model.family, info))
        write_pt(path.with_suffix(PT_SUFFIX), saved)
