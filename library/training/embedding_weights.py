"""What a textual-inversion run trains and writes: the embedding rows of one new token (``num_vectors_per_token``
rows in every text encoder), saved as the embedding file A1111, ComfyUI and diffusers read.

Only those rows change. The gradient of every other row is zeroed, and after each optimizer step every other row
is copied back from the base (an optimizer's weight decay would otherwise shrink the whole table), so the rest of
the model is bitwise the base's. The resume state holds the new rows alone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from library.config import FurnaceConfig
from library.models.errors import ModelLoadError
from library.models.loader import BaseModel
from library.models.token_embeddings import AddedToken, add_token, input_embeddings, word_vectors
from library.networks import EmbeddingInfo, TrainingInfo, embedding_metadata, save_dtype
from library.networks.embedding_file import encoder_keys, write_embedding_file
from library.training.accelerator import Precision
from library.training.exceptions import TrainingSetupError
from library.training.lora_weights import enable_checkpointing
from library.training.state import ADAPTER_FILE
from library.training.weights import TrainedWeights

logger = logging.getLogger(__name__)


class _TrainedRows:
    """One text encoder's embedding table, of which only ``token.ids`` train.

    The table trains in fp32. An encoder stored in a lower precision (pivotal tuning's frozen bf16 base) gets the
    table's output cast to its own dtype, as its layers (CPU layer norms refuse a mixed input) expect."""

    def __init__(self, encoder: torch.nn.Module, token: AddedToken, storage: torch.dtype) -> None:
        self.encoder, self.token = encoder, token
        table = input_embeddings(encoder)
        self.weight = table.weight
        if storage != self.weight.dtype:
            table.register_forward_hook(lambda module, inputs, output: output.to(storage))
        self.base = self.weight.detach().clone()
        self.trained = torch.zeros(self.weight.shape[0], 1, dtype=torch.bool, device=self.weight.device)
        self.trained[token.ids] = True
        self.weight.requires_grad_(True)
        self.weight.register_hook(lambda grad: grad * self.trained)

    def restore_others(self) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.where(self.trained, self.weight, self.base))

    def rows(self) -> torch.Tensor:
        return self.weight.detach()[self.token.ids]

    def load_rows(self, rows: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight[self.token.ids] = rows.to(self.weight.device, self.weight.dtype)


class NewTokens:
    """The run's new token in every tokenizer and text encoder, and the trained rows of each embedding table:
    what textual inversion trains alone and pivotal tuning (``pivotal_weights.py``) beside a LoRA."""

    def __init__(self, config: FurnaceConfig, model: BaseModel) -> None:
        section = config.textual_inversion
        self.section, self.family = section, model.family
        self.keys = encoder_keys(model.family)
        self.tables: list[_TrainedRows] = []
        for tokenizer, encoder in zip(model.tokenizers, model.text_encoders):
            storage = input_embeddings(encoder).weight.dtype
            input_embeddings(encoder).to(torch.float32)
            start = word_vectors(tokenizer, encoder, section.init_word, section.num_vectors_per_token)
            try:
                token = add_token(tokenizer, encoder, section.token_string, start)
            except ModelLoadError as error:
                raise TrainingSetupError(f"textual_inversion.token_string: {error}") from None
            self.tables.append(_TrainedRows(encoder, token, storage))
        logger.info("training %d vector(s) of %r, started from %r (token ids %s)", section.num_vectors_per_token,
                    section.token_string, section.init_word, [table.token.ids for table in self.tables])

    def param_group(self, learning_rate: float) -> dict:
        """The optimizer group of the rows: ``embedding_lr`` when set, else ``learning_rate``."""
        rate = self.section.embedding_lr if self.section.embedding_lr is not None else learning_rate
        return {"params": self.parameters(), "lr": rate, "name": "embedding"}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [table.weight for table in self.tables]

    def vectors(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The new rows by embedding-file key (``emb_params``, or ``clip_l`` and ``clip_g``)."""
        return {key: table.rows().to(dtype).cpu().contiguous() for key, table in zip(self.keys, self.tables)}

    def register_state_hooks(self, accelerator, file_name: str) -> None:
        """The state holds the new rows under ``file_name``: every other row is the base's, which a resumed run
        loads."""

        def save_hook(models, weights, output_dir):
            if accelerator.is_main_process:
                save_file(self.vectors(), os.path.join(output_dir, file_name))
            weights.clear()

        def load_hook(models, input_dir):
            saved = load_file(os.path.join(input_dir, file_name))
            for key, table in zip(self.keys, self.tables):
                table.load_rows(saved[key])
            models.clear()

        accelerator.register_save_state_pre_hook(save_hook)
        accelerator.register_load_state_pre_hook(load_hook)

    def restore_others(self) -> None:
        for table in self.tables:
            table.restore_others()

    def record(self) -> EmbeddingInfo:
        return EmbeddingInfo(self.section.token_string, self.section.num_vectors_per_token, self.section.init_word)


class EmbeddingWeights(TrainedWeights):
    """New token rows in every text encoder; the UNet, VAE and every other row frozen."""

    saves_base_model = False
    title = "textual inversion"
    trains_text_encoder = True  # the conditioning is computed with gradients, through the frozen encoder layers

    def __init__(self, config: FurnaceConfig, model: BaseModel, precision: Precision, device: torch.device) -> None:
        self.config, self.model = config, model
        model.unet.to(device, precision.frozen).requires_grad_(False)
        model.vae.to(device, torch.float32).requires_grad_(False)
        for encoder in model.text_encoders:
            encoder.to(device, torch.float32).requires_grad_(False)
        self.tokens = NewTokens(config, model)
        if config.training.gradient_checkpointing:
            enable_checkpointing(model, text_encoders_too=True)

    def modules_to_prepare(self) -> list[torch.nn.Module]:
        return list(self.model.text_encoders)

    def param_groups(self) -> list[dict]:
        return [self.tokens.param_group(self.config.optimizer.learning_rate)]

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.tokens.parameters()

    def register_state_hooks(self, accelerator) -> None:
        self.tokens.register_state_hooks(accelerator, ADAPTER_FILE)

    def after_step(self, step: int) -> None:
        self.tokens.restore_others()

    def sync_to_step(self, step: int) -> None:
        """Nothing depends on the step count for an embedding."""

    def save(self, path: Path, info: TrainingInfo) -> None:
        vectors = self.tokens.vectors(save_dtype(self.config.output.save_precision))
        write_embedding_file(path, vectors, embedding_metadata(self.model.family, info, self.tokens.record()))
