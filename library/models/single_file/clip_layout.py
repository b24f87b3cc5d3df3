"""Text encoder names: transformers CLIP <-> the two original layouts.

CLIP-L (SD1, SDXL's first encoder) is stored in the Hugging Face layout under ``transformer.text_model.``.
OpenCLIP towers (SD2's ViT-H, SDXL's bigG) are stored in open_clip's own layout: q/k/v packed into one
``in_proj`` tensor, a bare ``positional_embedding`` and a ``text_projection`` applied as ``x @ P``.

transformers 5 flattened ``CLIPTextModel`` (keys start at ``embeddings.``) but not ``CLIPTextModelWithProjection``
(keys start at ``text_model.``); rules are generated from the module's actual keys, so both work.
"""

from __future__ import annotations

from collections.abc import Iterable

from library.models.single_file.rules import (
    CONCAT_ROWS,
    IDENTITY,
    TRANSPOSE,
    KeyRule,
    rename_by_module,
)

_WRAPPER = "text_model."

_OPEN_CLIP_MODULES = {
    "embeddings.token_embedding": "token_embedding",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm": "ln_final",
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = ("q_proj", "k_proj", "v_proj")
_QKV_SUFFIXES = tuple(f"self_attn.{name}.{kind}" for name in _QKV for kind in ("weight", "bias"))


def clip_rules(keys: Iterable[str]) -> list[KeyRule]:
    """CLIP-L: the original layout is the Hugging Face one, always with the ``text_model.`` wrapper."""
    return [KeyRule(_WRAPPER + key.removeprefix(_WRAPPER), (key,)) for key in keys]


def _open_clip_name(core: str) -> str:
    """Rename a wrapper-less transformers key; layer indices pass through between the renamed parts."""
    if core.startswith("encoder.layers."):
        _, _, index, rest = core.split(".", 3)
        return f"transformer.resblocks.{index}.{rename_by_module(rest, _OPEN_CLIP_MODULES)}"
    return rename_by_module(core, _OPEN_CLIP_MODULES)


def open_clip_rules(keys: Iterable[str], num_layers: int, complete_tower: bool) -> list[KeyRule]:
    """OpenCLIP layout rules; ``complete_tower`` adds the parts SD2's diffusers encoder leaves out.

    SD2 conditions on the penultimate block of its 24-block OpenCLIP-H tower, so its diffusers encoder has 23
    layers and no projection. Files in the original layout still carry the whole tower; to stay loadable by
    programs that expect it, the unused last block is written as a copy of the one before and the projection as
    an identity. Neither is read back.
    """
    keys = list(keys)
    wrapper = _WRAPPER if any(key.startswith(_WRAPPER) for key in keys) else ""
    rules = []
    for key in keys:
        core = key.removeprefix(wrapper)
        if core == "text_projection.weight":
            rules.append(KeyRule("text_projection", (key,), TRANSPOSE))
        elif not core.endswith(_QKV_SUFFIXES):
            rules.append(KeyRule(_open_clip_name(core), (key,)))
    for layer in range(num_layers):
        for kind in ("weight", "bias"):
            sources = tuple(f"{wrapper}encoder.layers.{layer}.self_attn.{name}.{kind}" for name in _QKV)
            rules.append(KeyRule(f"transformer.resblocks.{layer}.attn.in_proj_{kind}", sources, CONCAT_ROWS))
    if complete_tower:
        rules.extend(_unused_tower_end(rules, num_layers, wrapper))
    return rules


def _unused_tower_end(rules: list[KeyRule], num_layers: int, wrapper: str) -> list[KeyRule]:
    last = f"transformer.resblocks.{num_layers - 1}."
    extra = f"transformer.resblocks.{num_layers}."
    copies = [
        KeyRule(extra + rule.original.removeprefix(last), rule.diffusers, rule.transform, placeholder=True)
        for rule in rules
        if rule.original.startswith(last)
    ]
    projection = KeyRule("text_projection", (f"{wrapper}final_layer_norm.weight",), IDENTITY, placeholder=True)
    return [*copies, projection]
