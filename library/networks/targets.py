"""Which modules of a model get an adapter, and the kohya name of every module that could.

The family record lists the module classes to search: Linear and 1x1-conv children of the UNet's transformer
blocks and of the text encoders' attention and MLP blocks, plus (LoCon) every Linear and conv child of resnets and
samplers, where the 3x3 convs take the conv rank and alpha. Blocks of a kind the family lets a run select
(``unet_block_kinds``: FLUX.1's double and single blocks) are searched only when the options select them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from torch import nn

from library.models.families import ModelFamily
from library.networks.config import LoraOptions
from library.networks.naming import LoraNamer

UNET = "unet"
TEXT_ENCODER = "text_encoder"  # the text encoders' adapters train together, at one learning rate
ADAPTER = "default"  # the peft adapter name every target's adapter is injected under


@dataclass(frozen=True)
class Target:
    """One adaptable module: its kohya name, where it lives (``"unet"`` or a text encoder index) and its rank."""

    name: str
    component: str | int
    path: str
    rank: int
    alpha: float

    @property
    def is_unet(self) -> bool:
        return self.component == UNET

    @property
    def part(self) -> str:
        """The optimizer group the module's adapter trains in: ``UNET`` or ``TEXT_ENCODER``."""
        return UNET if self.is_unet else TEXT_ENCODER


def _is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1))


def _children_of_classes(
    root: nn.Module, class_names: Sequence[str], keep_block: Callable[[str, str], bool] = lambda path, name: True
) -> Iterator[tuple[str, nn.Module]]:
    """Linear/Conv2d modules inside any module whose class name is listed (and that ``keep_block(path, class name)``
    keeps), each once, in model order."""
    seen: set[str] = set()
    for block_path, block in root.named_modules():
        if type(block).__name__ not in class_names or not keep_block(block_path, type(block).__name__):
            continue
        for child_path, child in block.named_modules():
            path = f"{block_path}.{child_path}" if block_path else child_path
            if isinstance(child, (nn.Linear, nn.Conv2d)) and child_path and path not in seen:
                seen.add(path)
                yield path, child


def _block_filter(family: ModelFamily, options: LoraOptions) -> Callable[[str, str], bool]:
    """Keeps a block unless it is of a selectable kind the options leave out (its index: its path's last part)."""
    kinds = {kind.class_name: name for name, kind in family.unet_block_kinds.items()}

    def keep(path: str, class_name: str) -> bool:
        kind = kinds.get(class_name)
        return kind is None or options.trains_block(kind, int(path.rsplit(".", 1)[-1]))

    return keep


def find_targets(
    family: ModelFamily, unet: nn.Module, text_encoders: Sequence[nn.Module], options: LoraOptions
) -> list[Target]:
    """The modules ``options`` adapts, in model order (UNet first, then each text encoder)."""
    namer = LoraNamer(family, unet.config)
    targets: list[Target] = []
    if options.adapts_unet:
        for path, module in _children_of_classes(unet, family.unet_target_classes, _block_filter(family, options)):
            if _is_pointwise(module):
                targets.append(Target(namer.unet(path), UNET, path, options.dim, options.alpha))
        if options.conv_dim is not None:
            for path, module in _children_of_classes(unet, family.unet_conv_target_classes):
                rank, alpha = (
                    (options.dim, options.alpha)
                    if _is_pointwise(module)
                    else (options.conv_dim, options.effective_conv_alpha)
                )
                targets.append(Target(namer.unet(path), UNET, path, rank, alpha))
    if options.adapts_text_encoders:
        for index, encoder in enumerate(text_encoders):
            for path, module in _children_of_classes(encoder, family.text_encoder_target_classes):
                if isinstance(module, nn.Linear):
                    targets.append(Target(namer.text_encoder(index, path), index, path, options.dim, options.alpha))
    return targets


def index_modules(
    family: ModelFamily, unet: nn.Module, text_encoders: Sequence[nn.Module]
) -> dict[str, tuple[nn.Module, str]]:
    """Every Linear/Conv2d of the model by kohya name (with its component-relative path), for merging any file."""
    namer = LoraNamer(family, unet.config)
    index: dict[str, tuple[nn.Module, str]] = {}
    for path, module in unet.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            index[namer.unet(path)] = (module, path)
    for encoder_index, encoder in enumerate(text_encoders):
        for path, module in encoder.named_modules():
            if isinstance(module, nn.Linear):
                index[namer.text_encoder(encoder_index, path)] = (module, path)
    return index
