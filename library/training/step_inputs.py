"""What the denoiser needs for one batch: latents, text conditioning, SDXL time ids, per-sample loss weights and masks.

Latents come from the pipeline's cache or are encoded on the fly; conditioning from the text-encoder cache
(frozen encoders) or from the encoders themselves, with gradients when they train.
"""

from __future__ import annotations

import torch

from library.config import FurnaceConfig
from library.data.latent_cache import encode_latents
from library.models.text_encoding import TextConditioning, encode_captions, token_lengths
from library.training.diffusion_step import sdxl_time_ids


class StepInputs:
    """Turns pipeline batches into model inputs on the training device."""

    def __init__(self, config: FurnaceConfig, model, data, device: torch.device, weights, wrapped: dict):
        self.model, self.data, self.device, self.weights = model, data, device, weights
        self.clip_skip = config.model.clip_skip
        self.token_lengths = token_lengths(model.family, config.flow_matching.t5xxl_max_token_length)
        self.unet = wrapped.get(id(model.unet), model.unet)
        self.text_encoders = [wrapped.get(id(encoder), encoder) for encoder in model.text_encoders]
        self.uses_time_ids = model.unet.config.get("addition_embed_type") == "text_time"
        self.text_cache = None
        if config.dataset.cache_text_encoder_outputs:
            from library.data.text_cache import TextEncoderCache

            self.text_cache = TextEncoderCache(self._encode_frozen)
            self.text_cache.build(data.all_captions())
        self._validation: list | None = None

    def _encode_frozen(self, captions: list[str]) -> TextConditioning:
        with torch.no_grad():
            return self._encode(captions)

    def _encode(self, captions: list[str]) -> TextConditioning:
        return encode_captions(
            self.model.family, self.model.tokenizers, self.text_encoders, captions, self.clip_skip, self.token_lengths
        )

    def conditioning(self, captions: list[str]) -> TextConditioning:
        if self.text_cache is not None:
            return self.text_cache.lookup(captions).to(self.device)
        with torch.set_grad_enabled(self.weights.trains_text_encoder and torch.is_grad_enabled()):
            return self._encode(captions)

    def latents(self, batch) -> torch.Tensor:
        """Cached latents, or the same encoding (normalised latent means) computed now."""
        if batch.latents is not None:
            return batch.latents.to(self.device)
        family = self.model.family
        return encode_latents(
            self.model.vae, batch.pixels, family.latent_scaling_factor, family.latent_shift_factor
        ).float()

    def time_ids(self, batch, dtype: torch.dtype) -> torch.Tensor | None:
        if not self.uses_time_ids:
            return None
        return sdxl_time_ids(batch.original_sizes, batch.crop_top_lefts, batch.target_sizes, self.device, dtype)

    def for_batch(self, batch) -> tuple[torch.Tensor, TextConditioning, torch.Tensor | None, torch.Tensor]:
        latents = self.latents(batch)
        conditioning = self.conditioning(batch.captions)
        weights = batch.loss_weights.to(self.device)
        return latents, conditioning, self.time_ids(batch, latents.dtype), weights

    def masks(self, batch) -> torch.Tensor | None:
        """The batch's loss masks on the device (None: unmasked)."""
        return batch.masks.to(self.device) if batch.masks is not None else None

    # ------------------------------------------------------------------------------------------ validation
    def _validation_batches(self) -> list:
        if self._validation is None:
            self._validation = [
                (batch, self.latents(batch)) for batch in self.data.validation_batches()
            ]
        return self._validation

    def validation_latents(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
        """Latents, per-sample weights and loss masks of every validation batch."""
        pairs = self._validation_batches()
        weights = [batch.loss_weights.to(self.device) for batch, _ in pairs]
        return [latents for _, latents in pairs], weights, [self.masks(batch) for batch, _ in pairs]

    def validation_conditioning(self, index: int) -> tuple[TextConditioning, torch.Tensor | None]:
        batch, latents = self._validation_batches()[index]
        with torch.no_grad():
            return self.conditioning(batch.captions), self.time_ids(batch, latents.dtype)
