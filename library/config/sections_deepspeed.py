"""DeepSpeed ZeRO through accelerate, set in the run's own config rather than only at launch time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .fields import SECTION_CONFIG, OptionalPath, Problem, raise_problems

OffloadDevice = Literal["none", "cpu", "nvme"]


class DeepSpeedSection(BaseModel):
    """ZeRO stage and offload; start the run with ``accelerate launch --num_processes N`` as usual."""

    model_config = SECTION_CONFIG

    enabled: bool = Field(
        False,
        title="Use DeepSpeed",
        description="Train with DeepSpeed ZeRO (also on when launched with `accelerate launch --use_deepspeed`)."
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(
        2,
        title="ZeRO stage",
        description="ZeRO stage: 1 partitions optimizer state, 2 also gradients, 3 also the weights themselves.",
    )
    offload_optimizer_device: OffloadDevice = Field(
        "none", description="Keep the optimizer state (and its step) on the CPU or NVMe instead of the GPU."
    )
    offload_optimizer_nvme_path: OptionalPath = Field(None, description="Folder for the NVMe optimizer offload.")
    offload_param_device: OffloadDevice = Field(
        "none", description="ZeRO-3 only: keep the partitioned weights on the CPU or NVMe between uses."
    )
    offload_param_nvme_path: OptionalPath = Field(None, description="Folder for the NVMe weight offload.")

    @model_validator(mode="after")
    def _consistent(self) -> DeepSpeedSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        if self.offload_param_device != "none" and self.zero_stage != 3:
            yield "offload_param_device", "needs deepspeed.zero_stage = 3 (only ZeRO-3 partitions the weights)"
        if self.offload_optimizer_device != "none" and self.zero_stage == 0:
            yield "offload_optimizer_device", "needs deepspeed.zero_stage 1, 2 or 3"
        if self.offload_optimizer_device == "nvme" and not self.offload_optimizer_nvme_path:
            yield "offload_optimizer_nvme_path", "is required with offload_optimizer_device = \"nvme\""
        if self.offload_param_device == "nvme" and not self.offload_param_nvme_path:
            yield "offload_param_nvme_path", "is required with offload_param_device = \"nvme\""
