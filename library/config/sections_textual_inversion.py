"""Textual inversion (train_textual_inversion.py): the new token, its vectors, what initialises them, and the
caption templates that stand in for a dataset's own captions. In train_network.py a token_string turns on pivotal
tuning: the token's embedding trains together with the LoRA."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .fields import SECTION_CONFIG, Problem, raise_problems


class TextualInversionSection(BaseModel):
    """The embedding a textual-inversion run learns; the rest of the model stays as it was."""

    model_config = SECTION_CONFIG

    token_string: str | None = Field(
        None,
        title="Token (trigger word)",
        description="The new token the embedding is learnt for, e.g. 'frnc'; written in captions and prompts. It "
        "must not already be a single word of the tokenizer's vocabulary.",
    )
    init_word: str | None = Field(
        None,
        title="Initial word",
        description="A word whose embedding the new vectors start from (its tokens in turn when it has several), "
        "e.g. 'circle'.",
    )
    num_vectors_per_token: int = Field(
        1, ge=1, le=75, description="Embedding vectors the token stands for (more: more capacity, fewer prompt tokens)."
    )
    embedding_lr: float | None = Field(
        None,
        gt=0,
        le=10,
        description="Learning rate of the new token's vectors; unset: optimizer.learning_rate. Mostly for pivotal "
        "tuning (a token_string in train_network.py), where the LoRA's rates are far lower than an embedding needs "
        "(e.g. 5e-3).",
    )
    embedding_file: Literal["bundled", "separate", "both"] = Field(
        "bundled",
        description="Pivotal tuning (train_network.py with a token_string): where each saved LoRA file's embedding "
        "goes. 'bundled': inside the LoRA file (the bundle_emb.* keys A1111 reads); 'separate': in "
        "<LoRA file name>_emb.safetensors beside it, the textual-inversion file diffusers, ComfyUI and A1111 load "
        "(the name diffusers' pivotal-tuning scripts give it); 'both'.",
    )
    use_object_template: bool = Field(
        False,
        description="Ignore the captions and train on object templates ('a photo of a <token>', ...), one picked "
        "at random per image.",
    )
    use_style_template: bool = Field(
        False,
        description="Ignore the captions and train on style templates ('a painting in the style of <token>', ...).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TextualInversionSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        if self.use_object_template and self.use_style_template:
            yield "use_style_template", "cannot be combined with use_object_template; pick one template list"
        if self.token_string is not None and (not self.token_string.strip() or " " in self.token_string.strip()):
            yield "token_string", "must be one word without spaces, e.g. 'frnc'"
