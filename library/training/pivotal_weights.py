"""Pivotal tuning: a LoRA and a new token's embedding trained together in one train_network.py run.

The LoRA is set up as any LoRA run's (``lora_weights.py``); the new token is added to every tokenizer and text
encoder and its rows train at their own rate (``textual_inversion.embedding_lr``) as in a textual-inversion run
(``embedding_weights.NewTokens``), every other row kept the base's. Previews prompt the token with the live rows.
Each saved LoRA file carries the embedding under the keys A1111 reads (``networks/bundled_embeddings.py``), so one
file holds both halves; with ``textual_inversion.embedding_file`` the embedding is (also, or only) written beside it
as a textual-inversion file of its own (``run_files.embedding_companion``). The resume state holds the rows beside the
adapters.
"""

from __future__ import annotations

from pathlib import Path

import torch

from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.networks import TrainingInfo, embedding_metadata, lora_metadata, save_dtype, write_lora_file
from library.networks.bundled_embeddings import bundle_tensors
from library.networks.embedding_file import write_embedding_file
from library.training.accelerator import Precision
from library.training.embedding_weights import NewTokens
from library.training.lora_weights import LoraWeights
from library.training.run_files import embedding_companion

EMBEDDING_STATE_FILE = "embedding.safetensors"


class PivotalWeights(LoraWeights):
    """LoRA adapters plus the new token's embedding rows."""

    title = "pivotal tuning"
    trainable_denoisers = ("unet",)  # new tokens are built for CLIP tokenizers and embedding tables

    def __init__(self, config: FurnaceConfig, model: BaseModel, precision: Precision, device: torch.device) -> None:
        super().__init__(config, model, precision, device)
        self.tokens = NewTokens(config, model)
        self.groups = [*self.groups, self.tokens.param_group(config.optimizer.learning_rate)]
        self.trains_text_encoder = True  # the rows need gradients through the text encoders

    def modules_to_prepare(self) -> list[torch.nn.Module]:
        encoders = list(self.model.text_encoders)
        return [module for module in super().modules_to_prepare() if module not in encoders] + encoders

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*super().parameters(), *self.tokens.parameters()]

    def register_state_hooks(self, accelerator) -> None:
        super().register_state_hooks(accelerator)
        self.tokens.register_state_hooks(accelerator, EMBEDDING_STATE_FILE)

    def after_step(self, step: int) -> None:
        super().after_step(step)
        self.tokens.restore_others()

    def _write(self, path: Path, info: TrainingInfo) -> None:
        """The embedding file first (when asked for), so a LoRA file on disk always has its embedding beside it."""
        dtype = save_dtype(self.config.output.save_precision)
        vectors, where = self.tokens.vectors(dtype), self.tokens.section.embedding_file
        if where != "bundled":
            metadata = embedding_metadata(self.model.family, info, self.tokens.record())
            write_embedding_file(embedding_companion(path), vectors, metadata)
        bundled = bundle_tensors(self.tokens.section.token_string, vectors) if where != "separate" else {}
        write_lora_file(path, {**self.network.state_dict_kohya(dtype), **bundled},
                        lora_metadata(self.model.family, self.network.options, info))
