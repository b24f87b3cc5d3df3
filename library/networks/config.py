"""What kind of adapter to build: LoRA or LoKr, rank, alpha, LoCon convs, DoRA, and which parts of the model get one.

Field names match the ``[network]`` section of the run config, so the trainer passes that section's values as
keyword arguments. The checks here repeat the schema's bounds because tools build options directly too.
"""

from __future__ import annotations

from dataclasses import dataclass

from library.config.block_selection import TRAIN_BLOCKS, BlockChoice, parse_block_indices
from library.config.sections_train import NETWORK_MODULES, SAVE_FORMATS


@dataclass(frozen=True)
class LoraOptions(BlockChoice):
    """Adapter options; ``conv_dim`` set = LoCon (3x3 convs of resnets and samplers adapted too).

    ``module`` "lokr" builds LyCORIS LoKr adapters instead: ``lokr_factor`` splits each dimension (-1 = as square as
    possible), ``lokr_full_matrix`` keeps the larger Kronecker factor whole. ``save_format`` is the layout files are
    written in (``networks/lora_layouts.py``). ``train_blocks`` and the block indices pick which of a DiT's blocks get
    adapters (``config/block_selection.py``).
    """

    module: str = "lora"
    dim: int = 16
    alpha: float = 8.0
    dropout: float = 0.0
    conv_dim: int | None = None
    conv_alpha: float | None = None
    use_dora: bool = False
    train_unet_only: bool = False
    train_text_encoder_only: bool = False
    lokr_factor: int = -1
    lokr_full_matrix: bool = False
    save_format: str = "kohya"
    train_blocks: str = "all"
    train_double_block_indices: str = "all"
    train_single_block_indices: str = "all"

    def __post_init__(self) -> None:
        if self.save_format not in SAVE_FORMATS:
            raise ValueError(f"network save_format must be one of {', '.join(SAVE_FORMATS)}, got {self.save_format!r}")
        if self.module not in NETWORK_MODULES:
            raise ValueError(f"network module must be one of {', '.join(NETWORK_MODULES)}, got {self.module!r}")
        if self.dim < 1:
            raise ValueError(f"network dim must be >= 1, got {self.dim}")
        if self.alpha <= 0:
            raise ValueError(f"network alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"network dropout must be in [0, 1), got {self.dropout}")
        if self.conv_dim is not None and self.conv_dim < 1:
            raise ValueError(f"network conv_dim must be >= 1, got {self.conv_dim}")
        if self.conv_alpha is not None and self.conv_dim is None:
            raise ValueError("network conv_alpha needs conv_dim (the conv adapters' rank)")
        if self.conv_alpha is not None and self.conv_alpha <= 0:
            raise ValueError(f"network conv_alpha must be > 0, got {self.conv_alpha}")
        if self.train_unet_only and self.train_text_encoder_only:
            raise ValueError("train_unet_only and train_text_encoder_only cannot both be set")
        if self.lokr_factor < 1 and self.lokr_factor != -1:
            raise ValueError(f"network lokr_factor must be -1 (automatic) or >= 1, got {self.lokr_factor}")
        if self.is_lokr and self.use_dora:
            raise ValueError("network use_dora cannot be combined with the LoKr module")
        if self.is_lokr and self.dropout:
            raise ValueError("network dropout is not applied by LoKr adapters; set it to 0")
        if not self.is_lokr and (self.lokr_factor != -1 or self.lokr_full_matrix):
            raise ValueError("network lokr_factor and lokr_full_matrix need the LoKr module")
        if self.train_blocks not in TRAIN_BLOCKS:
            raise ValueError(f"network train_blocks must be one of {', '.join(TRAIN_BLOCKS)}, got {self.train_blocks!r}")
        for text in self.block_indices.values():
            parse_block_indices(text)

    @property
    def is_lokr(self) -> bool:
        return self.module == "lokr"

    @property
    def locon(self) -> bool:
        return self.conv_dim is not None

    @property
    def effective_conv_alpha(self) -> float:
        """Alpha of the 3x3 conv adapters (1.0 when LoCon is on and no conv_alpha was given)."""
        return 1.0 if self.conv_alpha is None else self.conv_alpha

    @property
    def adapts_unet(self) -> bool:
        return not self.train_text_encoder_only

    @property
    def adapts_text_encoders(self) -> bool:
        return not self.train_unet_only
