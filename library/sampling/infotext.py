"""The A1111 ``parameters`` text of a preview, so A1111's PNG Info, image sites and other tools read its settings.

A1111 writes the prompt, then ``Negative prompt: ...`` on its own line when there is one, then one line of
``key: value`` pairs: ``Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512``.
"""

from __future__ import annotations

import re

from library.sampling.prompts import SamplePrompt
from library.sampling.samplers import a1111_sampler_name

PARAMETERS_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt: "
_SETTING_SPLIT = re.compile(r", (?=[A-Z][\w ]*: )")


def a1111_parameters(prompt: SamplePrompt) -> str:
    """The ``parameters`` text chunk A1111 would write for an image rendered with ``prompt``'s settings."""
    lines = [prompt.prompt]
    if prompt.negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX}{prompt.negative_prompt}")
    lines.append(
        f"Steps: {prompt.steps}, Sampler: {a1111_sampler_name(prompt.sampler)}, CFG scale: {prompt.cfg_scale:g}, "
        f"Seed: {prompt.seed}, Size: {prompt.width}x{prompt.height}"
    )
    return "\n".join(lines)


def read_a1111_parameters(text: str) -> dict[str, str]:
    """The fields of a ``parameters`` text (``a1111_parameters``'s layout): ``prompt``, ``negative_prompt`` when
    there is one, and each ``key: value`` of the settings line under its A1111 name (``Seed``, ``Steps``, ``Size``).

    A prompt may itself hold commas and newlines, so only a last line starting with ``Steps: `` (as A1111's does)
    is read as settings; its pairs are split at ", " followed by a capitalised key, as A1111's PNG Info splits them.
    """
    lines = text.split("\n")
    settings = lines.pop() if len(lines) > 1 and lines[-1].startswith("Steps: ") else ""
    fields = dict(pair.split(": ", 1) for pair in _SETTING_SPLIT.split(settings) if ": " in pair)
    negative = next((index for index, line in enumerate(lines) if line.startswith(NEGATIVE_PREFIX)), None)
    if negative is None:
        return {"prompt": "\n".join(lines), **fields}
    return {"prompt": "\n".join(lines[:negative]),
            "negative_prompt": "\n".join(lines[negative:]).removeprefix(NEGATIVE_PREFIX), **fields}
