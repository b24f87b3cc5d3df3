"""The toy world: one coloured shape on a white background, drawn with Pillow, with its caption.

It is small enough for a Stable Diffusion model of the real architecture to learn on a CPU, and simple enough for a
hand-written judge (:mod:`library.toyworld.judge`) to read back what an image shows. Everything is deterministic
from a seed. One colour (:data:`HELD_OUT_COLOURS`) never appears in the base model's pretraining, so a LoRA or a
DreamBooth run has something genuinely new to learn: the quickstart concept (:data:`QUICKSTART_CONCEPT`) is a known
shape in that colour, named by a trigger word.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
BACKGROUND_NAME = "white"
BACKGROUND_RGB = (255, 255, 255)

# Named colours, far enough apart in RGB that a blurry sample still lands nearest to the colour it was meant to be.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 205, 30),
    "green": (35, 160, 55),
    "cyan": (25, 190, 205),
    "blue": (35, 70, 215),
    "purple": (115, 50, 170),
    "black": (25, 25, 25),
    "magenta": (235, 40, 195),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
HELD_OUT_COLOURS: tuple[str, ...] = ("magenta",)
PRETRAINING_COLOURS: tuple[str, ...] = tuple(name for name in COLOURS if name not in HELD_OUT_COLOURS)


@dataclass(frozen=True)
class Concept:
    """A trigger word that stands for one colour-shape pair, and the class word it belongs to."""

    trigger: str
    colour: str
    shape: str

    @property
    def class_word(self) -> str:
        return self.shape


QUICKSTART_CONCEPT = Concept(trigger="frnc", colour="magenta", shape="circle")


@dataclass(frozen=True)
class Scene:
    """One picture: a shape of a colour, its circumradius and centre in pixels, and its rotation in degrees."""

    colour: str
    shape: str
    radius: float
    centre_x: float
    centre_y: float
    rotation: float


def random_scene(rng: random.Random, colours: tuple[str, ...] = PRETRAINING_COLOURS, shape: str | None = None,
                 colour: str | None = None) -> Scene:
    """A scene with a random (or the given) colour and shape, size, place and rotation, fully inside the image."""
    radius = rng.uniform(0.2, 0.36) * IMAGE_SIZE
    margin = radius + 2
    return Scene(
        colour=colour or rng.choice(colours),
        shape=shape or rng.choice(SHAPES),
        radius=radius,
        centre_x=rng.uniform(margin, IMAGE_SIZE - margin),
        centre_y=rng.uniform(margin, IMAGE_SIZE - margin),
        rotation=rng.uniform(0.0, 360.0),
    )


_SUPERSAMPLE = 4


def render(scene: Scene, rgb: tuple[int, int, int] | None = None) -> Image.Image:
    """Draw ``scene`` (in ``rgb`` instead of its named colour if given) at 4x and downsample, so edges are
    anti-aliased like a photo's rather than jagged."""
    big = IMAGE_SIZE * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND_RGB)
    points = [(x * _SUPERSAMPLE, y * _SUPERSAMPLE) for x, y in outline(scene)]
    ImageDraw.Draw(image).polygon(points, fill=rgb or COLOURS[scene.colour])
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def outline(scene: Scene) -> list[tuple[float, float]]:
    """The shape's polygon in image coordinates (a circle is a 72-gon)."""
    if scene.shape == "circle":
        corners, radii = 72, [1.0]
    elif scene.shape == "square":
        corners, radii = 4, [1.0]
    elif scene.shape == "triangle":
        corners, radii = 3, [1.0]
    elif scene.shape == "star":
        corners, radii = 10, [1.0, 0.45]
    else:
        raise ValueError(f"unknown shape {scene.shape!r}; expected one of {', '.join(SHAPES)}")
    points = []
    for index in range(corners):
        angle = math.radians(scene.rotation) + 2 * math.pi * index / corners
        length = scene.radius * radii[index % len(radii)]
        points.append((scene.centre_x + length * math.sin(angle), scene.centre_y - length * math.cos(angle)))
    return points


def caption(colour: str, shape: str) -> str:
    """The canonical caption of a scene, as the quickstart and the scores prompt it."""
    return f"a {colour} {shape} on a {BACKGROUND_NAME} background"


def class_caption(shape: str) -> str:
    """A caption naming the shape only, as DreamBooth's class prompt does: the base draws it in any colour."""
    return f"a {shape} on a {BACKGROUND_NAME} background"


def pretraining_caption(scene: Scene, rng: random.Random) -> str:
    """A caption in one of the phrasings pretraining teaches, so shorter prompts ("a circle") mean something too."""
    choice = rng.random()
    if choice < 0.55:
        return caption(scene.colour, scene.shape)
    if choice < 0.80:
        return f"a {scene.colour} {scene.shape}"
    if choice < 0.90:
        return class_caption(scene.shape)
    return f"a {scene.shape}"
