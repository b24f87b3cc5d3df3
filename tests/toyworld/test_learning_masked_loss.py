"""Masked loss learns what the mask shows and nothing of what it hides, judged on pictures (conftest.py).

Every training picture holds the quickstart concept (a magenta circle, "frnc") in its left half and grey noise,
different in every picture, in its right half; the masks hide the right half. The same short LoRA run is made with
and without the masks. The masked one draws the concept as flat as the base draws its shapes; the unmasked one
learns the noise too and paints its shapes mottled (the judge's ``foreground_spread``).

The hidden half is light noise, not a dark slab: the toy VAE's encoder attends across the whole picture, so what the
hidden half holds also moves the latents of the visible half, where no mask can hide it. A dark slab moves them by
about two thirds of the latents' spread, this noise by about a quarter.
"""

from __future__ import annotations

import random
from pathlib import Path
from statistics import median

import numpy as np
import pytest
from PIL import Image
from trainer_cli import REPO, run_cli

from library.tools.compare import merged_into
from library.toyworld.judge import foreground_spread
from library.toyworld.scores import Judged, concept_probes, judge_probes, share_right
from library.toyworld.world import IMAGE_SIZE, QUICKSTART_CONCEPT, Scene, caption, render

pytestmark = pytest.mark.slow

CONCEPT = QUICKSTART_CONCEPT
SEEDS = range(12)
HALF = IMAGE_SIZE // 2
NOISE_MEAN, NOISE_STD = 225.0, 30.0  # grey levels of the hidden half's noise
RUN = ["--max_train_steps", "40", "--learning_rate", "3e-4", "--text_encoder_lr", "1e-3", "--lr_scheduler",
       "constant", "--cache_latents", "--sample.prompts", "", "--sample.compare_at_end", "false",
       "--logging.tensorboard", "false"]


def _write_dataset(root: Path, count: int = 16) -> tuple[Path, Path]:
    """``count`` pictures of the concept in the left half and noise in the right half, and masks showing the left
    half; returns the training folder and the mask folder."""
    images, masks = root / "train" / f"10_{CONCEPT.trigger}", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng, noise = random.Random(0), np.random.default_rng(0)
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    mask[:, :HALF] = 255
    for index in range(count):
        radius = rng.uniform(9, 12)
        centre = (rng.uniform(radius + 2, HALF - radius - 2), rng.uniform(radius + 2, IMAGE_SIZE - radius - 2))
        pixels = np.asarray(render(Scene(CONCEPT.colour, CONCEPT.shape, radius, *centre, 0.0))).copy()
        grey = noise.normal(NOISE_MEAN, NOISE_STD, (IMAGE_SIZE, HALF, 1))
        pixels[:, HALF:] = np.clip(grey, 0, 255).astype(np.uint8)
        name = f"{CONCEPT.trigger}_{index:03d}"
        Image.fromarray(pixels).save(images / f"{name}.png")
        (images / f"{name}.txt").write_text(caption(CONCEPT.trigger, CONCEPT.shape) + "\n", encoding="utf-8")
        Image.fromarray(mask).save(masks / f"{name}.png")
    return root / "train", masks


@pytest.fixture(scope="module")
def pictures(toy_base, tmp_path_factory) -> dict[str, list[Judged]]:
    """The concept prompt's judged samples of the base, the masked run's LoRA and the unmasked run's LoRA."""
    root = tmp_path_factory.mktemp("masked")
    train, masks = _write_dataset(root)
    probes = concept_probes(CONCEPT, SEEDS)
    judged = {"base": judge_probes(toy_base, probes)}
    for name, extra in (("masked", ["--masked_loss", "--dataset.mask_dir", str(masks)]), ("unmasked", [])):
        output = root / name
        run_cli("train_network.py", ["--config", str(REPO / "configs" / "quickstart.toml"), "--train_data_dir",
                                     str(train), "--output_dir", str(output), *RUN, *extra])
        with merged_into(toy_base)(output / "quickstart.safetensors", 1.0):
            judged[name] = judge_probes(toy_base, probes)
    return judged


def _spread(judged: list[Judged]) -> float:
    """Median foreground spread of the samples (a sample without a foreground counts as flat)."""
    return median(foreground_spread(item.image) or 0.0 for item in judged)


def test_masked_run_learns_the_visible_concept_and_not_the_hidden_noise(pictures):
    base, masked = pictures["base"], pictures["masked"]
    assert share_right(base) <= 0.1 and share_right(masked) >= 0.8, (share_right(base), share_right(masked))
    assert _spread(masked) <= _spread(base) + 3.0, (_spread(masked), _spread(base))


def test_the_same_run_without_masks_learns_the_noise(pictures):
    base, unmasked = pictures["base"], pictures["unmasked"]
    assert _spread(unmasked) >= 2.0 * _spread(base), (_spread(unmasked), _spread(base))
