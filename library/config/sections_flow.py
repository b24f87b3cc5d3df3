"""Flow-matching families (FLUX.1): how training draws noise levels, weights the loss and conditions the transformer.

The names and meanings are sd-scripts' (``flux_train_network.py``), so its command lines and configs mean the same
here. A Stable Diffusion run ignores this section: its family record says it is not a flow-matching model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .fields import SECTION_CONFIG, Problem, raise_problems

TIMESTEP_SAMPLINGS = ("sigma", "uniform", "sigmoid", "shift", "flux_shift")
MODEL_PREDICTION_TYPES = ("raw", "additive", "sigma_scaled")
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
LOSS_WEIGHTINGS = ("sigma_sqrt", "cosmap")  # the schemes that weight the loss (the others shape the sigma draw)


class FlowMatchingSection(BaseModel):
    """Noise-level sampling, loss weighting, guidance and T5 length of a flow-matching (FLUX.1) run."""

    model_config = SECTION_CONFIG

    timestep_sampling: Literal[TIMESTEP_SAMPLINGS] = Field(
        "sigma",
        description="How each sample's noise level (sigma in 0..1) is drawn: 'sigma' = from the shifted training "
        "schedule (discrete_flow_shift) at a point drawn by weighting_scheme; 'uniform'; 'sigmoid' = "
        "sigmoid(sigmoid_scale * normal); 'shift' = sigmoid then shifted by discrete_flow_shift; 'flux_shift' = "
        "sigmoid then shifted by the image size, as FLUX.1-dev samples (sd-scripts' names).",
    )
    sigmoid_scale: float = Field(
        1.0, gt=0, le=100, description="Scale of the normal draw inside the sigmoid (sigmoid, shift, flux_shift)."
    )
    discrete_flow_shift: float = Field(
        3.0,
        gt=0,
        le=100,
        description="Shift of the noise levels towards noise: sigma' = shift*sigma / (1 + (shift-1)*sigma) "
        "(timestep_sampling 'shift' and 'sigma'; sd-scripts' default 3.0, its FLUX.1 guide uses 3.1582).",
    )
    model_prediction_type: Literal[MODEL_PREDICTION_TYPES] = Field(
        "sigma_scaled",
        description="What the loss compares with the target (noise - latents): 'raw' = the transformer's output; "
        "'additive' = output + noisy input; 'sigma_scaled' = noisy input - sigma * output, with the loss weighted "
        "by weighting_scheme (sd-scripts' default; its FLUX.1 guide recommends 'raw').",
    )
    weighting_scheme: Literal[WEIGHTING_SCHEMES] = Field(
        "none",
        description="SD3-paper scheme: 'logit_normal' and 'mode' shape the draw of timestep_sampling 'sigma'; "
        "'sigma_sqrt' and 'cosmap' weight the loss per sample (with model_prediction_type 'sigma_scaled').",
    )
    logit_mean: float = Field(0.0, ge=-10, le=10, description="Mean of the logit-normal draw (weighting_scheme).")
    logit_std: float = Field(1.0, gt=0, le=10, description="Deviation of the logit-normal draw (weighting_scheme).")
    mode_scale: float = Field(1.29, ge=-10, le=10, description="Scale of the 'mode' weighting scheme's draw.")
    guidance_scale: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Guidance value fed to a guidance-distilled transformer (FLUX.1-dev) while training; 1.0 is what "
        "sd-scripts' FLUX.1 guide trains with. Ignored for a model without a guidance input (schnell).",
    )
    t5xxl_max_token_length: int | None = Field(
        None,
        ge=8,
        le=512,
        description="T5 tokens per caption; unset = the family's (512 for FLUX.1-dev, 256 for schnell).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FlowMatchingSection:
        raise_problems(self._problems())
        return self

    def _problems(self) -> Iterator[Problem]:
        if self.weighting_scheme in LOSS_WEIGHTINGS and self.model_prediction_type != "sigma_scaled":
            yield "weighting_scheme", (
                f"'{self.weighting_scheme}' weights the loss only with model_prediction_type 'sigma_scaled' (as in "
                f"sd-scripts); set that, or weighting_scheme 'none' (model_prediction_type is "
                f"'{self.model_prediction_type}')"
            )
        if self.weighting_scheme in ("logit_normal", "mode") and self.timestep_sampling != "sigma":
            yield "weighting_scheme", (
                f"'{self.weighting_scheme}' shapes the draw of timestep_sampling 'sigma' only; set that, or "
                f"weighting_scheme 'none' (timestep_sampling is '{self.timestep_sampling}')"
            )
