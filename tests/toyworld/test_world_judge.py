"""The toy world and its judge: deterministic renders, and a judge that names what each render shows."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageFilter

from library.toyworld.judge import NONE, foreground_spread, judge
from library.toyworld.world import (
    BACKGROUND_RGB,
    COLOURS,
    HELD_OUT_COLOURS,
    IMAGE_SIZE,
    PRETRAINING_COLOURS,
    QUICKSTART_CONCEPT,
    SHAPES,
    random_scene,
    render,
)


def _labelled_renders(count: int, seed: int, blur: float = 0.0, noise: float = 0.0):
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    for _ in range(count):
        scene = random_scene(rng, tuple(COLOURS))
        image = render(scene)
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        if noise:
            pixels = np.asarray(image, dtype=np.float32) + noise_rng.normal(0, noise, (IMAGE_SIZE, IMAGE_SIZE, 3))
            image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        yield scene, image


def _accuracy(pairs) -> float:
    pairs = list(pairs)
    right = sum(judge(image).shows(scene.colour, scene.shape) for scene, image in pairs)
    return right / len(pairs)


def test_judge_names_colour_and_shape_of_renders():
    assert _accuracy(_labelled_renders(400, seed=11)) >= 0.98


def test_judge_holds_on_blurred_noisy_renders_like_a_model_draws():
    assert _accuracy(_labelled_renders(300, seed=12, blur=1.5, noise=12)) >= 0.98


def test_judge_says_none_for_an_empty_or_unnamed_picture():
    assert judge(Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND_RGB)).colour == NONE
    assert judge(Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND_RGB)).shape == NONE
    speck = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND_RGB)
    speck.putpixel((30, 30), (255, 0, 0))
    assert judge(speck).shape == NONE
    scene = random_scene(random.Random(0), shape="square")
    grey = judge(render(scene, rgb=(128, 128, 128)))  # no named colour is near mid grey
    assert (grey.colour, grey.shape) == (NONE, "square")


def test_spread_tells_a_mottled_shape_from_a_flat_one():
    flat = [foreground_spread(image) for _, image in _labelled_renders(20, seed=13)]
    mottled = [foreground_spread(image) for _, image in _labelled_renders(20, seed=13, noise=20)]
    assert max(flat) < 6.0 and min(mottled) > 20.0, (flat, mottled)
    assert foreground_spread(Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND_RGB)) is None


def test_every_shape_and_colour_is_recognised():
    rng = random.Random(5)
    for colour in COLOURS:
        for shape in SHAPES:
            for _ in range(3):
                scene = random_scene(rng, colour=colour, shape=shape)
                assert judge(render(scene)).shows(colour, shape), scene


def test_renders_are_deterministic_from_the_seed():
    first = [np.asarray(image) for _, image in _labelled_renders(5, seed=3)]
    again = [np.asarray(image) for _, image in _labelled_renders(5, seed=3)]
    other = [np.asarray(image) for _, image in _labelled_renders(5, seed=4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_held_out_colour_is_the_quickstart_concept_and_not_pretrained():
    assert QUICKSTART_CONCEPT.colour in HELD_OUT_COLOURS
    assert QUICKSTART_CONCEPT.colour not in PRETRAINING_COLOURS
    assert QUICKSTART_CONCEPT.shape in SHAPES
    assert set(PRETRAINING_COLOURS) | set(HELD_OUT_COLOURS) == set(COLOURS)
