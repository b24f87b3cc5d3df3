"""When a run renders its sample previews, and how: the prompts (file or lines) parsed once, rendered live."""

from __future__ import annotations

from pathlib import Path

from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.models.text_encoding import token_lengths
from library.training.accelerator import Precision


class PreviewSchedule:
    """The run's sample prompts and when they are due (every N steps / epochs of the ``sample`` section)."""

    def __init__(self, config: FurnaceConfig, model: BaseModel, output_dir: Path, precision: Precision) -> None:
        from library.sampling.preview import warn_unused_settings
        from library.sampling.prompts import run_defaults, section_prompts

        self.config, self.model, self.output_dir = config.sample, model, output_dir
        self.output_name = config.output.output_name
        self.clip_skip = config.model.clip_skip
        self.token_lengths = token_lengths(model.family, config.flow_matching.t5xxl_max_token_length)
        self.autocast = None if precision.autocast == "no" else precision.frozen
        self.prompts = section_prompts(self.config, run_defaults(self.config, config.dataset.resolution,
                                                                 config.training.seed),
                                       model.family.resolution_multiple)
        if self.prompts:
            warn_unused_settings(model.family, self.prompts, str(self.config.prompts or "sample.prompt_text"),
                                  self.config.sampler, "sampler" in self.config.model_fields_set)

    @property
    def enabled(self) -> bool:
        return bool(self.prompts)

    def due_at_step(self, step: int) -> bool:
        return self.enabled and bool(self.config.every_n_steps) and step % self.config.every_n_steps == 0

    def due_at_epoch(self, epoch: int) -> bool:
        return self.enabled and bool(self.config.every_n_epochs) and epoch % self.config.every_n_epochs == 0

    def render(self, step: int):
        from library.sampling.preview import render_samples

        return render_samples(self.model, self.prompts, self.output_dir, self.output_name, step,
                              clip_skip=self.clip_skip, autocast_dtype=self.autocast,
                              batch_size=self.config.render_batch_size, token_lengths=self.token_lengths)

    def render_alongside(self) -> None:
        """The same forward passes as :meth:`render`, results discarded (a rank that writes nothing)."""
        from library.sampling.preview import generate_images

        generate_images(self.model, self.prompts, clip_skip=self.clip_skip, autocast_dtype=self.autocast,
                        batch_size=self.config.render_batch_size, token_lengths=self.token_lengths)
