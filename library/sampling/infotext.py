"""The A1111 ``parameters`` text of a preview, so A1111's PNG Info, image sites and other tools read its settings.

A1111 writes the prompt, then ``Negative prompt: ...`` on its own line when there is one, then one line of
``key: value`` pairs: ``Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512``.
"""

from __future__ import annotations

from library.sampling.prompts import SamplePrompt
from library.sampling.samplers import a1111_sampler_name

PARAMETERS_KEY = "parameters"


def a1111_parameters(prompt: SamplePrompt) -> str:
    """The ``parameters`` text chunk A1111 would write for an image rendered with ``prompt``'s settings."""
    lines = [prompt.prompt]
    if prompt.negative_prompt:
        lines.append(f"Negative prompt: {prompt.negative_prompt}")
    lines.append(
        f"Steps: {prompt.steps}, Sampler: {a1111_sampler_name(prompt.sampler)}, CFG scale: {prompt.cfg_scale:g}, "
        f"Seed: {prompt.seed}, Size: {prompt.width}x{prompt.height}"
    )
    return "\n".join(lines)
