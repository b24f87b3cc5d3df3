"""Caption templates for textual inversion: short generic sentences around the token, used instead of a dataset's
own captions when ``textual_inversion.use_object_template`` or ``use_style_template`` is set (as sd-scripts and
A1111 users know them: "object" templates describe a thing, "style" templates a way of drawing).

Each training image gets one template picked with the batch's own random generator, so a resumed run sees the
same captions; validation uses the first template.
"""

from __future__ import annotations

import random

from library.config.sections_textual_inversion import TextualInversionSection

OBJECT_TEMPLATES: tuple[str, ...] = (
    "a picture of a {}",
    "a photograph of the {}",
    "an image showing a {}",
    "a close-up picture of the {}",
    "a bright photo of a {}",
    "a dim photo of the {}",
    "a small {} in a picture",
    "a large {} in a photo",
    "a cropped photograph of the {}",
    "a clear picture of one {}",
    "a blurry photo of a {}",
    "a good photograph of the {}",
    "my picture of a {}",
    "a rendering of the {}",
    "a snapshot of a {}",
    "the {} in a photograph",
)

STYLE_TEMPLATES: tuple[str, ...] = (
    "a picture drawn in the style of {}",
    "a painting made in the style of {}",
    "an illustration in the style of {}",
    "artwork in the style of {}",
    "a sketch in the manner of {}",
    "a rendering done in the style of {}",
    "a small picture in the style of {}",
    "a large painting in the style of {}",
    "a bright illustration in the style of {}",
    "a dark picture in the style of {}",
    "a detailed drawing in the style of {}",
    "a simple picture in the style of {}",
)


def training_templates(section: TextualInversionSection) -> tuple[str, ...]:
    """The captions a run trains on instead of its dataset's (none: the dataset's own captions)."""
    if section.use_object_template:
        templates = OBJECT_TEMPLATES
    elif section.use_style_template:
        templates = STYLE_TEMPLATES
    else:
        return ()
    return tuple(template.format(section.token_string) for template in templates)


def pick_template(templates: tuple[str, ...], rng: random.Random | None) -> str:
    """One template, drawn from ``rng``; the first when there is no generator (fixed captions)."""
    return templates[0] if rng is None else rng.choice(templates)
