"""Turn captions into the UNet's conditioning, the way each family was trained.

The family record says which hidden state conditions the UNet (last or penultimate), whether the final LayerNorm
is applied, whether ``clip_skip`` applies, and (SDXL) that the second encoder's pooled projection is also used.
``clip_skip`` follows the A1111 / sd-scripts meaning: 1 = the last layer, 2 = the penultimate layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from library.models.families import ModelFamily, TextEncoderSpec
from library.models.token_embeddings import expand_tokens


@dataclass
class TextConditioning:
    """Encoder hidden states ``[batch, tokens, width]`` and (SDXL) the pooled embedding ``[batch, width]``."""

    hidden_states: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> TextConditioning:
        pooled = None if self.pooled is None else self.pooled.to(device, dtype)
        return TextConditioning(self.hidden_states.to(device, dtype), pooled)


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids padded/truncated to the tokenizer's 77-token window; a multi-vector embedding's word stands for
    all its tokens."""
    return tokenizer(
        expand_tokens(tokenizer, captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _final_layer_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    """transformers 5 ``CLIPTextModel`` holds it directly; ``CLIPTextModelWithProjection`` under ``text_model``.
    A distributed wrapper (``.module``) is looked through."""
    inner = getattr(encoder, "module", encoder)
    inner = getattr(inner, "text_model", inner)
    return inner.final_layer_norm


def encode_with(
    spec: TextEncoderSpec, encoder: torch.nn.Module, input_ids: torch.Tensor, clip_skip: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states (and the projected pooled output for encoders with a projection) of one encoder."""
    device = next(encoder.parameters()).device
    output = encoder(input_ids.to(device), output_hidden_states=True)
    index = spec.hidden_state_index - (clip_skip - 1 if spec.clip_skip_applies else 0)
    if index == -1 and spec.apply_final_layer_norm:
        hidden = output.last_hidden_state
    else:
        hidden = output.hidden_states[index]
        if spec.apply_final_layer_norm:
            hidden = _final_layer_norm(encoder)(hidden)
    pooled = getattr(output, "text_embeds", None)
    return hidden, pooled


def encode_captions(
    family: ModelFamily,
    tokenizers: list,
    text_encoders: list[torch.nn.Module],
    captions: list[str],
    clip_skip: int = 1,
) -> TextConditioning:
    """Conditioning for a batch of captions; several encoders' states are concatenated on the width axis."""
    states, pooled = [], None
    for spec, tokenizer, encoder in zip(family.text_encoders, tokenizers, text_encoders):
        hidden, projected = encode_with(spec, encoder, tokenize(tokenizer, captions), clip_skip)
        states.append(hidden)
        if projected is not None:
            pooled = projected
    return TextConditioning(torch.cat(states, dim=-1), pooled)
