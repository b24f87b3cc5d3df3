"""What a run produces: preview samples, saved files and logs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .fields import (
    MAX_EPOCHS,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    SECTION_CONFIG,
    OptionalPath,
    canonical_choice,
    raise_problems,
)

SAMPLERS = (
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++", "dpmsingle",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SampleSection(BaseModel):
    """Preview images generated during training."""

    model_config = SECTION_CONFIG

    prompts: OptionalPath = Field(
        None,
        title="Sample prompts file",
        description="Prompt file: one prompt a line, options --n --w --h --s --l --d --ss.",
    )
    prompt_text: str | None = Field(
        None,
        title="Sample prompts",
        description="The sample prompts written here instead of in a file: one prompt a line, the prompt file's "
        "syntax (e.g. 'a photo --n blurry --w 512 --h 512 --s 20 --l 7 --d 42 --ss euler_a'); # lines are comments.",
    )
    every_n_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Generate previews every N steps.")
    every_n_epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="Generate previews every N epochs.")
    at_first: bool = Field(False, description="Also generate previews before the first step.")
    sampler: Literal[SAMPLERS] = Field("ddim", description="Default sampler (k_ prefixes are accepted, e.g. k_euler).")
    steps: int = Field(20, ge=1, le=1000, description="Default denoising steps (at most 1000).")
    cfg_scale: float = Field(
        7.0,
        ge=0,
        le=50,
        description="Default classifier-free guidance scale (FLUX.1: true CFG, applied only to prompts with a --n "
        "negative prompt).",
    )
    guidance_scale: float = Field(
        3.5, ge=0, le=50, description="Default guidance input of a guidance-distilled model (FLUX.1-dev; --g)."
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Default preview seed; unset = training.seed.")
    width: int | None = Field(
        None,
        ge=MIN_SIDE,
        le=MAX_SIDE,
        multiple_of=8,
        description=f"Default preview width ({MIN_SIDE} to {MAX_SIDE} pixels); unset = dataset width.",
    )
    height: int | None = Field(
        None,
        ge=MIN_SIDE,
        le=MAX_SIDE,
        multiple_of=8,
        description=f"Default preview height ({MIN_SIDE} to {MAX_SIDE} pixels); unset = dataset height.",
    )
    render_batch_size: int = Field(
        1, ge=1, le=64, description="Previews and the compare grid: render up to N prompts with the same settings "
        "together (faster; each picture still comes from its own seed, equal up to float rounding).",
    )
    use_ema: bool | None = Field(
        None,
        description="With an EMA (network.ema_decay, dreambooth.use_ema): render the previews and the compare grid "
        "from the EMA weights (true) or the trained ones (false); unset = from what the saved files hold.",
    )
    compare_at_end: bool = Field(
        False,
        description="LoRA runs: after the final save, render a grid of the run's saved files x compare_strengths x "
        "the sample prompts into <output_dir>/compare/ (needs sample.prompts or sample.prompt_text).",
    )
    compare_strengths: list[Annotated[float, Field(ge=-10, le=10)]] = Field(
        [0.5, 1.0], min_length=1, max_length=16, description="LoRA strengths (grid columns) of compare_at_end."
    )

    @field_validator("sampler", mode="before")
    @classmethod
    def _strip_k_prefix(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.lower()
            return value[2:] if value.startswith("k_") else value
        return value

    @model_validator(mode="after")
    def _one_source_of_prompts(self) -> SampleSection:
        if self.prompts and self.prompt_text:
            raise_problems([("prompt_text", "give the prompts in sample.prompt_text or a file in sample.prompts, "
                                            "not both")])
        if self.compare_at_end and not (self.prompts or self.prompt_text):
            raise_problems([("compare_at_end", "needs sample.prompts or sample.prompt_text (the prompts of the "
                                               "grid's rows)")])
        return self


class OutputSection(BaseModel):
    """Where and how trained weights and resumable state are saved."""

    model_config = SECTION_CONFIG

    output_dir: str = Field("output", min_length=1, description="Folder receiving weights, samples, logs and state.")
    output_name: str = Field("last", min_length=1, description="File name stem of the saved weights.")
    save_precision: Literal["fp16", "bf16", "float"] = Field("fp16", description="dtype of the saved weights.")
    save_every_n_epochs: int | None = Field(
        None, ge=1, le=MAX_EPOCHS, description="Save intermediate weights every N epochs."
    )
    save_every_n_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Save intermediate weights every N steps."
    )
    save_last_n: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description="Keep only the newest N intermediate files; 0 keeps all (sd-scripts save_last_n_*).",
    )
    save_state: bool = Field(False, description="Also save optimizer/scheduler state/ with each save, for resume.")
    save_state_on_train_end: bool = Field(False, description="Save state/ once at the end of training.")
    training_comment: str | None = Field(None, description="Free text stored in the weights' metadata.")

    @field_validator("output_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value:
            raise ValueError("must be a file name stem, not a path (put folders in output.output_dir)")
        return value


class LoggingSection(BaseModel):
    """Console, TensorBoard and progress logging."""

    model_config = SECTION_CONFIG

    log_dir: OptionalPath = Field(None, description="TensorBoard folder; unset = <output_dir>/logs.")
    tensorboard: bool = Field(True, title="TensorBoard", description="Write TensorBoard scalars and sample images.")
    log_every_n_steps: int = Field(1, ge=1, le=MAX_STEPS, description="Write scalars every N steps.")
    loss_smoothing: float = Field(0.9, ge=0, lt=1, description="EMA factor of the smoothed loss shown and logged.")
    log_level: Annotated[Literal[LOG_LEVELS], canonical_choice(LOG_LEVELS)] = Field(
        "INFO", description="Console log level."
    )
