"""The root of the one config schema: every option of a training run, by section."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .fields import Problem, raise_problems, readable_title
from .sections_data import DatasetSection, ModelSection
from .sections_deepspeed import DeepSpeedSection
from .sections_dreambooth import DreamBoothSection
from .sections_flow import FlowMatchingSection
from .sections_hypernetwork import HypernetworkSection
from .sections_output import LoggingSection, OutputSection, SampleSection
from .sections_textual_inversion import TextualInversionSection
from .sections_train import NetworkSection, OptimizerSection, TrainingSection


class FurnaceConfig(BaseModel):
    """One training run. TOML files, CLI flags, the GUI form and the saved config.toml all map onto this."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, title="Furnace training run",
        field_title_generator=readable_title,
    )

    model: ModelSection = Field(default_factory=ModelSection, description="The base model to adapt.")
    dataset: DatasetSection = Field(default_factory=DatasetSection, description="Images, captions and batching.")
    network: NetworkSection = Field(default_factory=NetworkSection, description="The LoRA / LoCon / DoRA adapter.")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection, description="Optimizer and LR schedule.")
    training: TrainingSection = Field(default_factory=TrainingSection, description="Loop length, precision, loss.")
    flow_matching: FlowMatchingSection = Field(
        default_factory=FlowMatchingSection,
        description="Flow-matching families (FLUX.1): noise-level sampling, loss weighting, guidance, T5 length.",
    )
    sample: SampleSection = Field(default_factory=SampleSection, description="Preview images during training.")
    output: OutputSection = Field(default_factory=OutputSection, description="Saved weights and resumable state.")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Console and TensorBoard logging.")
    dreambooth: DreamBoothSection = Field(
        default_factory=DreamBoothSection, description="DreamBooth prompts, class images and full fine-tuning."
    )
    textual_inversion: TextualInversionSection = Field(
        default_factory=TextualInversionSection,
        description="train_textual_inversion.py: the new token and how its embedding starts.",
    )
    hypernetwork: HypernetworkSection = Field(
        default_factory=HypernetworkSection, description="train_hypernetwork.py: the A1111 hypernetwork's MLPs."
    )
    deepspeed: DeepSpeedSection = Field(
        default_factory=DeepSpeedSection, description="DeepSpeed ZeRO partitioning and offload (multi-GPU)."
    )

    @model_validator(mode="after")
    def _runnable(self) -> FurnaceConfig:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        """A run needs a base model and images; say which key to set before anything loads."""
        if not self.model.pretrained_model_name_or_path:
            yield "model.pretrained_model_name_or_path", "is required: a diffusers folder or a .safetensors/.ckpt file"
        if not (self.dataset.train_data_dir or self.dataset.dataset_config):
            yield "dataset.train_data_dir", "is required (or set dataset.dataset_config)"
        if self.dataset.cache_text_encoder_outputs and not self.network.train_unet_only:
            yield "dataset.cache_text_encoder_outputs", (
                "needs network.train_unet_only = true (a cached text encoder cannot train)"
            )
        full = self.dreambooth.train_method == "full"
        if self.dataset.cache_text_encoder_outputs and full and self.dreambooth.train_text_encoder:
            yield "dataset.cache_text_encoder_outputs", (
                "cannot be combined with dreambooth.train_text_encoder (a cached text encoder cannot train)"
            )


SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation for name, field in FurnaceConfig.model_fields.items()  # type: ignore[misc]
}
