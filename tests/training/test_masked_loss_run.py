"""Masked loss end to end: the trainer CLI with alpha masks, flips, validation and a disk latent cache writes a LoRA
file recording ``ss_masked_loss`` and caches the masks; a mask folder missing a mask stops the run in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from trainer_cli import base_args, run_cli

from library.data.latent_cache import CACHE_DIR_NAME

pytestmark = pytest.mark.slow


def _alpha_dataset(root: Path, count: int = 4) -> Path:
    """Noise pictures whose right half is transparent."""
    folder = root / "2_x"
    folder.mkdir(parents=True)
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 255, (64, 64, 4), dtype=np.uint8)
        pixels[..., 3] = 255
        pixels[:, 32:, 3] = 0
        Image.fromarray(pixels).save(folder / f"img_{index}.png")
        (folder / f"img_{index}.txt").write_text("a photo", encoding="utf-8")
    return root


def test_alpha_masked_run_records_and_caches_its_masks(tiny_model_factory, tmp_path):
    dataset = _alpha_dataset(tmp_path / "data")
    output = tmp_path / "out"
    args = base_args(tiny_model_factory("sd1").folder, dataset, output, max_train_steps=3, masked_loss="true",
                     flip_aug="true", cache_latents_to_disk="true", validation_split=0.25)
    run_cli("train_network.py", args)
    with safe_open(str(output / "lora.safetensors"), framework="pt") as handle:
        assert handle.metadata()["ss_masked_loss"] == "True"
    cached = sorted((dataset / "2_x" / CACHE_DIR_NAME).glob("*.safetensors"))
    assert len(cached) == 4
    with safe_open(str(cached[0]), framework="pt") as handle:
        mask = handle.get_tensor("mask")
    assert mask.shape == (1, 8, 8) and mask[..., :4].min() == 1 and mask[..., 4:].max() == 0


def test_a_missing_mask_file_stops_the_run_naming_it(tiny_model_factory, tmp_path):
    dataset = _alpha_dataset(tmp_path / "data", count=2)
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (64, 64), 255).save(masks / "img_0.png")
    args = base_args(tiny_model_factory("sd1").folder, dataset, tmp_path / "out", masked_loss="true")
    result = run_cli("train_network.py", [*args, "--dataset.mask_dir", str(masks)], check=False)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "no mask" in line]
    assert len(lines) == 1 and "img_1.png" in lines[0] and "img_0.png" not in lines[0], result.stderr
