"""Turn captions into the denoiser's conditioning, the way each family was trained.

The family record says which hidden state conditions the UNet (last or penultimate), whether the final LayerNorm
is applied, whether ``clip_skip`` applies, and (SDXL) that the second encoder's pooled projection is also used.
FLUX.1 conditions on T5's last hidden states as the sequence and on CLIP-L's pooled output alone (the encoder's
``conditions``), with T5's length from the record unless the run sets another.
``clip_skip`` follows the A1111 / sd-scripts meaning: 1 = the last layer, 2 = the penultimate layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from library.models.families import ModelFamily, TextEncoderSpec
from library.models.token_embeddings import expand_tokens


@dataclass
class TextConditioning:
    """Encoder hidden states ``[batch, tokens, width]`` and (SDXL, FLUX.1) the pooled embedding ``[batch, width]``."""

    hidden_states: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> TextConditioning:
        pooled = None if self.pooled is None else self.pooled.to(device, dtype)
        return TextConditioning(self.hidden_states.to(device, dtype), pooled)


def tokenize(tokenizer, captions: list[str], max_length: int | None = None) -> torch.Tensor:
    """Token ids padded/truncated to ``max_length`` (default: the tokenizer's window, 77 for CLIP); a multi-vector
    embedding's word stands for all its tokens."""
    return tokenizer(
        expand_tokens(tokenizer, captions),
        padding="max_length",
        max_length=max_length or tokenizer.model_max_length,
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


def pooled_output(encoder: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The encoder's pooled output (CLIP: the final state at the end token, unprojected)."""
    device = next(encoder.parameters()).device
    return encoder(input_ids.to(device)).pooler_output


def encode_captions(
    family: ModelFamily,
    tokenizers: list,
    text_encoders: list[torch.nn.Module],
    captions: list[str],
    clip_skip: int = 1,
    token_lengths: Mapping[str, int] | None = None,
) -> TextConditioning:
    """Conditioning for a batch of captions; several sequence encoders' states are concatenated on the width axis.
    ``token_lengths`` overrides the tokens per caption of the encoders it names (by component)."""
    states, pooled = [], None
    for spec, tokenizer, encoder in zip(family.text_encoders, tokenizers, text_encoders):
        input_ids = tokenize(tokenizer, captions, (token_lengths or {}).get(spec.component))
        if spec.conditions == "pooled":
            pooled = pooled_output(encoder, input_ids)
            continue
        hidden, projected = encode_with(spec, encoder, input_ids, clip_skip)
        states.append(hidden)
        if projected is not None:
            pooled = projected
    return TextConditioning(torch.cat(states, dim=-1), pooled)


def token_lengths(family: ModelFamily, t5_max_length: int | None) -> dict[str, int]:
    """The per-encoder length overrides of a run: ``t5xxl_max_token_length`` for the family's T5 encoders."""
    if t5_max_length is None:
        return {}
    return {spec.component: t5_max_length for spec in family.text_encoders if spec.tokenizer == "t5"}
