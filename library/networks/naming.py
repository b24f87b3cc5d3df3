"""Module paths <-> kohya/A1111 LoRA names.

A LoRA file names each adapted module by its path with ``.`` replaced by ``_`` and a component prefix. Two
spellings need care: transformers 5 ``CLIPTextModel`` dropped the ``text_model.`` wrapper every LoRA file still
writes (``CLIPTextModelWithProjection`` kept it), and SDXL files name UNet modules by the original SGM blocks
(``input_blocks.4.1``) instead of diffusers' (``down_blocks.1.attentions.0``). Because ``_`` also occurs inside
module names, a file name cannot be parsed back on its own: names are reversed by looking them up among the
names of the modules that exist (``library.networks.targets``).
"""

from __future__ import annotations

from collections.abc import Mapping

from library.models.families import ModelFamily, TextEncoderSpec
from library.models.single_file.rules import rename_by_module
from library.models.single_file.unet_layout import unet_module_table

TEXT_WRAPPER = "text_model."  # CLIP's wrapper module: LoRA files keep it, transformers 5 CLIPTextModel drops it


def flatten(prefix: str, path: str) -> str:
    """The kohya name of module ``path`` under ``prefix``."""
    return prefix + path.replace(".", "_")


def text_encoder_path_in_file(path: str, architecture: str = "CLIPTextModel") -> str:
    """A text-encoder module path as LoRA files spell it: a CLIP encoder's always inside ``text_model.``, a T5
    encoder's as transformers names it (``encoder.block.0...``, sd-scripts' ``lora_te3_`` names)."""
    if not architecture.startswith("CLIP"):
        return path
    return TEXT_WRAPPER + path.removeprefix(TEXT_WRAPPER)


def text_encoder_name(spec: TextEncoderSpec, path: str) -> str:
    """The kohya name of a module of the text encoder ``spec`` describes."""
    return flatten(spec.lora_prefix, text_encoder_path_in_file(path, spec.architecture))


class SgmNames:
    """diffusers UNet module paths <-> original SGM block paths, generated from one UNet config.

    ``input_blocks`` number every resnet/transformer pair and downsampler in order (index = 1 + level *
    (layers_per_block + 1) + layer), ``output_blocks`` likewise with one more layer per level, and the middle block
    is ``resnet, transformer, resnet``. Inner names follow the original model (``conv1`` -> ``in_layers.2``).
    """

    def __init__(self, unet_config: Mapping[str, object]) -> None:
        self._to_sgm = unet_module_table(dict(unet_config))
        self._to_diffusers = {sgm: diffusers for diffusers, sgm in self._to_sgm.items()}

    def to_sgm(self, path: str) -> str:
        return rename_by_module(path, self._to_sgm)

    def to_diffusers(self, path: str) -> str:
        """Inverse of :meth:`to_sgm`; a path that does not map back exactly is not one this UNet has."""
        try:
            renamed = rename_by_module(path, self._to_diffusers)
            valid = rename_by_module(renamed, self._to_sgm) == path
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"{path!r} is not an SGM (original) UNet module path of this architecture")
        return renamed


class LoraNamer:
    """The kohya name of any UNet or text-encoder module path, by one family's naming rules.

    BFL-named families (FLUX.1) hold their adapters under diffusers paths: their files fuse several modules into
    one BFL name, which ``networks/lora_layouts.py`` does when a file is written or read.
    """

    def __init__(self, family: ModelFamily, unet_config: Mapping[str, object]) -> None:
        self.family = family
        self._sgm = SgmNames(unet_config) if family.unet_lora_naming == "sgm" else None

    def unet(self, path: str) -> str:
        return flatten(self.family.unet_lora_prefix, self._sgm.to_sgm(path) if self._sgm is not None else path)

    def text_encoder(self, index: int, path: str) -> str:
        return text_encoder_name(self.family.text_encoders[index], path)
