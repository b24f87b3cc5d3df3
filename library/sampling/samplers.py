"""Sampler names as sd-scripts and A1111 users write them, mapped to diffusers schedulers.

A preview sampler must denoise with the same noise schedule the model is trained on, and a v-prediction model must
be sampled as one. So every scheduler is built from the training schedule's config (betas, timestep count,
prediction type) plus the few options that make it the named sampler. The registry is plain data so prompt files
can be validated without importing diffusers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

logger = logging.getLogger(__name__)

# Keys of a training schedule that define the noise process; everything else in it is sampler-specific.
_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
)


@dataclass(frozen=True)
class SamplerSpec:
    """A diffusers scheduler class name and the options that turn it into the named sampler.

    ``a1111_name`` is how A1111 names the same sampler in a PNG's ``parameters`` text (None where A1111 has no
    equivalent; the registry name is written then).
    """

    scheduler_class: str
    a1111_name: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _spec(scheduler_class: str, a1111_name: str | None, **options: Any) -> SamplerSpec:
    return SamplerSpec(scheduler_class, a1111_name, MappingProxyType(options))


_BASE_SAMPLERS: dict[str, SamplerSpec] = {
    "ddim": _spec("DDIMScheduler", "DDIM", clip_sample=False, set_alpha_to_one=False),
    "pndm": _spec("PNDMScheduler", "PLMS", skip_prk_steps=True, set_alpha_to_one=False),
    "lms": _spec("LMSDiscreteScheduler", "LMS"),
    "euler": _spec("EulerDiscreteScheduler", "Euler"),
    "euler_a": _spec("EulerAncestralDiscreteScheduler", "Euler a"),
    "heun": _spec("HeunDiscreteScheduler", "Heun"),
    "dpm_2": _spec("KDPM2DiscreteScheduler", "DPM2"),
    "dpm_2_a": _spec("KDPM2AncestralDiscreteScheduler", "DPM2 a"),
    "dpmsolver": _spec(
        "DPMSolverMultistepScheduler", None, algorithm_type="dpmsolver", solver_order=2, final_sigmas_type="sigma_min"
    ),
    "dpmsolver++": _spec("DPMSolverMultistepScheduler", "DPM++ 2M", algorithm_type="dpmsolver++", solver_order=2),
    "dpmsingle": _spec("DPMSolverSinglestepScheduler", None, lower_order_final=True),
}
# The k-diffusion spellings sd-scripts also accepts name the same samplers.
_ALIASES = {f"k_{name}": name for name in ("lms", "euler", "euler_a", "dpm_2", "dpm_2_a")}

SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType(
    {**_BASE_SAMPLERS, **{alias: _BASE_SAMPLERS[target] for alias, target in _ALIASES.items()}}
)


def sampler_names() -> tuple[str, ...]:
    """Every accepted sampler name, k_ aliases included."""
    return tuple(SAMPLERS)


def canonical_sampler(name: str) -> str:
    """The registry name for ``name`` (case-insensitive, k_ aliases resolved); ValueError lists the choices."""
    key = name.strip().lower()
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return _ALIASES.get(key, key)


def a1111_sampler_name(name: str) -> str:
    """How A1111 writes sampler ``name`` in its ``parameters`` text; the registry name where A1111 has none."""
    key = canonical_sampler(name)
    return SAMPLERS[key].a1111_name or key


def build_scheduler(name: str, training_config: Mapping[str, Any]):
    """A fresh diffusers scheduler for sampler ``name`` on the noise schedule described by ``training_config``.

    ``training_config`` is the training noise scheduler's config (e.g. ``model.noise_scheduler.config``) or a
    family's ``scheduler_config``; its prediction type is kept, so v-prediction models sample correctly.
    """
    import diffusers

    spec = SAMPLERS[canonical_sampler(name)]
    scheduler_class = getattr(diffusers, spec.scheduler_class)
    accepted = set(inspect.signature(scheduler_class.__init__).parameters) - {"self"}
    schedule = {key: training_config[key] for key in _SCHEDULE_KEYS if key in training_config}
    dropped = {key: value for key, value in schedule.items() if key not in accepted and value not in (None, False)}
    if dropped:
        logger.warning("sampler %s ignores training schedule settings %s", name, dropped)
    options = {key: value for key, value in schedule.items() if key in accepted}
    options.update(spec.options)
    if "steps_offset" in accepted:
        options["steps_offset"] = 1  # Stable Diffusion's released scheduler configs all use 1
    try:
        return scheduler_class(**options)
    except ImportError as error:  # diffusers' placeholder classes raise this when an optional backend is missing
        raise RuntimeError(f"sampler {name!r} is unavailable: {str(error).strip()}") from None


FLOW_SAMPLER = "euler"  # what previews of a flow-matching family use: the family's own flow-matching Euler


def build_flow_scheduler(training_config: Mapping[str, Any]):
    """A fresh flow-matching Euler scheduler on the training schedule (FLUX.1-dev: shifted by image size)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(dict(training_config))
