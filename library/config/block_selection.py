"""Which of a DiT's transformer blocks get adapters, in sd-scripts' FLUX.1 terms (``networks/lora_flux.py``).

``train_blocks`` picks a kind ("all", "double", "single"); ``train_double_block_indices`` and
``train_single_block_indices`` pick blocks of each kind by index: "all", "none", or indices and inclusive ranges
from 0 ("0,1,8-12"). The syntax is checked here, with the config; whether the indices exist is checked against the
model's block counts before it loads (``training/family_support.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

TRAIN_BLOCKS = ("all", "double", "single")
BLOCK_KINDS = ("double", "single")


def parse_block_indices(text: str) -> frozenset[int] | None:
    """The indices ``text`` selects; None for "all". Raises ValueError naming what is malformed."""
    text = text.strip()
    if text == "all":
        return None
    if text in ("none", ""):
        return frozenset()
    selected: set[int] = set()
    for part in text.split(","):
        start, _, end = (piece.strip() for piece in part.partition("-"))
        if not start.isdigit() or (end and not end.isdigit()):
            raise ValueError(f"expected 'all', 'none' or indices and ranges such as '0,1,8-12' (got {text!r})")
        first, last = int(start), int(end or start)
        if last < first:
            raise ValueError(f"range {part.strip()!r} ends before it starts")
        selected.update(range(first, last + 1))
    return frozenset(selected)


def _as_text(value: Any) -> Any:
    """sd-scripts' network_args give '0' or '0,1' as Python literals (an int, a list): back to the text form."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return ",".join(map(str, value))
    return value


def _checked(value: str) -> str:
    parse_block_indices(value)
    return value.strip()


BlockIndices = Annotated[str, BeforeValidator(_as_text), AfterValidator(_checked)]
"""A block selection as the config holds it: its text, checked."""


class BlockChoice:
    """The block selection of a class holding ``train_blocks`` and the two index texts (the ``[network]`` section
    and the adapter options built from it). It declares no fields itself, so each class keeps its own field order
    and defaults."""

    @property
    def block_indices(self) -> dict[str, str]:
        """The index text of each block kind, as the config spells it."""
        return {"double": self.train_double_block_indices, "single": self.train_single_block_indices}

    @property
    def selects_all_blocks(self) -> bool:
        return self.train_blocks == "all" and all(text == "all" for text in self.block_indices.values())

    @property
    def selects_blocks(self) -> bool:
        """Whether the options leave at least one block of some kind (the model may lack it)."""
        return any(parse_block_indices(text) != frozenset() for kind, text in self.block_indices.items()
                   if self.train_blocks in ("all", kind))

    def trains_block(self, kind: str, index: int) -> bool:
        """Whether block ``index`` of ``kind`` ("double", "single") gets adapters."""
        if self.train_blocks not in ("all", kind):
            return False
        indices = parse_block_indices(self.block_indices[kind])
        return indices is None or index in indices
