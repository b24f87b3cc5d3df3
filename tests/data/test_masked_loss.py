"""Masked loss: masks from a mask folder or the alpha channel follow their image through resize, random crop and
flip, are cached with the latents, and the loss gives the hidden pixels exactly no gradient."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image
from pipeline_fixtures import run_config, write_images

from library.data.latent_cache import CACHE_DIR_NAME
from library.data.pipeline import build_training_data
from library.data.records import DatasetError
from library.models.families import get_family
from library.models.tiny import build_components, tiny_configs
from library.models.text_encoding import TextConditioning
from library.training.diffusion_step import LossSettings, denoising_loss
from library.training.loss import element_loss, min_snr_weights

RED, BLUE = (230, 20, 20), (20, 20, 230)


@pytest.fixture(scope="module")
def components():
    family = get_family("sd1")
    return build_components(family, tiny_configs(family), seed=0)


def half_image(path: Path, size: tuple[int, int], alpha: bool = False) -> Path:
    """Red left half, blue right half; with ``alpha`` the right half is transparent."""
    width, height = size
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[:, : width // 2, :3], pixels[:, width // 2 :, :3] = RED, BLUE
    pixels[..., 3] = 255
    if alpha:
        pixels[:, width // 2 :, 3] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels if alpha else pixels[..., :3]).save(path)
    path.with_suffix(".txt").write_text("a photo", encoding="utf-8")
    return path


def half_mask(path: Path, size: tuple[int, int]) -> Path:
    """White (learn) on the left half, black (ignore) on the right."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path


def masked_dataset(root: Path, size: tuple[int, int] = (96, 64), count: int = 1) -> None:
    for index in range(count):
        half_image(root / "train" / "1_x" / f"img_{index}.png", size)
        half_mask(root / "masks" / f"img_{index}.png", size)


def build(root: Path, **options: object):
    options.setdefault("mask_dir", root / "masks")
    return build_training_data(run_config(train_data_dir=root / "train", masked_loss=True, **options))


def test_mask_follows_its_image_through_resize_random_crop_and_flip(tmp_path: Path) -> None:
    masked_dataset(tmp_path, size=(150, 100))  # resized to 96x64, then a random 64x64 crop
    data = build(tmp_path, random_crop=True, flip_aug=True)
    seen = set()
    for number in range(16):
        batch = data.load_batch([0], 0, number)
        red = batch.pixels[0, 0] > 0.7  # clearly red pixels (the image's left half, wherever it landed)
        blue = batch.pixels[0, 2] > 0.7
        mask = batch.masks[0, 0]
        assert batch.masks.shape == (1, 1, 64, 64)
        assert red.any() and blue.any()
        assert torch.all(mask[red] > 0.99) and torch.all(mask[blue] < 0.01)
        seen.add((batch.crop_top_lefts[0], bool(red[:, 0].all())))
    assert len({crop for crop, _ in seen}) > 3  # several crops, and both orientations (red on the left or right)
    assert {left_is_red for _, left_is_red in seen} == {True, False}


def test_alpha_channel_is_the_mask_and_an_image_without_alpha_weighs_one(tmp_path: Path) -> None:
    half_image(tmp_path / "train" / "1_x" / "a.png", (64, 64), alpha=True)
    write_images(tmp_path / "train" / "1_x", [(64, 64)], stem="b")
    data = build_training_data(run_config(train_data_dir=tmp_path / "train", masked_loss=True))
    names = [record.path.name for record in data.train_records]
    batch = data.load_batch([names.index("a.png"), names.index("b_0.png")], 0, 0)
    expected = torch.zeros(64, 64)
    expected[:, :32] = 1
    assert torch.equal(batch.masks[0, 0], expected)
    assert torch.equal(batch.masks[1, 0], torch.ones(64, 64))


def test_class_images_are_not_masked_and_need_no_mask_file(tmp_path: Path) -> None:
    masked_dataset(tmp_path, size=(64, 64))
    write_images(tmp_path / "reg" / "1_x", [(64, 64)])
    data = build(tmp_path, reg_data_dir=tmp_path / "reg", prior_loss_weight=0.5)
    reg = next(i for i, record in enumerate(data.train_records) if record.is_reg)
    batch = data.load_batch([1 - reg, reg], 0, 0)
    assert batch.masks[0, 0, :, 40:].max() == 0 and batch.masks[0, 0, :, :24].min() == 1
    assert torch.equal(batch.masks[1], torch.ones(1, 64, 64))
    assert batch.loss_weights.tolist() == [1.0, 0.5]


def test_hidden_half_gets_exactly_zero_gradient_through_the_real_loss(tmp_path: Path, components) -> None:
    """A masked image and an unmasked one in one batch, with min-SNR: the prediction's gradient is zero on the
    masked image's hidden latent half, non-zero elsewhere; each sample's loss is its masked mean times its SNR
    weight (the mean over all latent elements, not renormalised by the mask's area)."""
    masked_dataset(tmp_path, size=(64, 64))
    half_image(tmp_path / "reg" / "1_x" / "c.png", (64, 64))
    data = build(tmp_path, reg_data_dir=tmp_path / "reg")
    batch = data.load_batch([0, 1], 0, 0)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([100, 700])
    captured: dict[str, torch.Tensor] = {}

    class Recording(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, *args, **kwargs):
            output = self.unet(*args, **kwargs)
            output.sample.retain_grad()
            captured["prediction"] = output.sample
            return output

    unet = components.unet
    conditioning = TextConditioning(torch.randn(2, 77, unet.config.cross_attention_dim), None)
    family = get_family("sd1")
    scheduler = DDPMScheduler(**dict(family.scheduler_config))
    settings = LossSettings(min_snr_gamma=5.0)
    per_sample = denoising_loss(Recording(unet), scheduler, latents, noise, timesteps, conditioning, settings,
                                masks=batch.masks)
    per_sample.sum().backward()
    gradient = captured["prediction"].grad
    assert torch.count_nonzero(gradient[0, :, :, 4:]) == 0  # the hidden half of the masked image
    assert torch.all(gradient[0, :, :, :4] != 0) and torch.all(gradient[1] != 0)

    prediction = captured["prediction"].detach()
    elements = element_loss(prediction, noise, "l2", 0.1)
    snr = min_snr_weights(scheduler, timesteps, 5.0, v_prediction=False)
    assert torch.allclose(per_sample[0], elements[0, :, :, :4].sum() / elements[0].numel() * snr[0])
    assert torch.allclose(per_sample[1], elements[1].mean() * snr[1])


def test_cached_masks_round_trip_mirrored_and_are_rebuilt_when_the_mask_changes(tmp_path: Path, components) -> None:
    masked_dataset(tmp_path, size=(64, 64))
    vae = components.vae
    data = build(tmp_path, flip_aug=True)
    data.prepare(vae, cache_latents=True, cache_to_disk=True)
    cache_file = next((tmp_path / "train" / "1_x" / CACHE_DIR_NAME).glob("*.safetensors"))
    left = torch.zeros(1, 8, 8)
    left[..., :4] = 1
    masks = {tuple(data.load_batch([0], 0, n).masks[0, 0, 0].tolist()) for n in range(12)}
    assert masks == {tuple(left[0, 0].tolist()), tuple(left.flip(-1)[0, 0].tolist())}  # both orientations

    stamp = cache_file.stat().st_mtime_ns
    again = build(tmp_path, flip_aug=True)
    again.prepare(vae, cache_latents=True, cache_to_disk=True)
    assert cache_file.stat().st_mtime_ns == stamp  # reused: the mask is in the file
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :16] = 255  # a quarter now
    Image.fromarray(mask).save(tmp_path / "masks" / "img_0.png")
    os.utime(tmp_path / "masks" / "img_0.png", ns=(stamp + 10**9, stamp + 10**9))
    rebuilt = build(tmp_path, flip_aug=True)
    rebuilt.prepare(vae, cache_latents=True, cache_to_disk=True)
    assert cache_file.stat().st_mtime_ns != stamp
    assert rebuilt.load_batch([0], 0, 0).masks[0, 0].sum() == 8 * 2  # two latent columns of eight


def test_a_partly_covered_latent_cell_weighs_its_share(tmp_path: Path) -> None:
    half_image(tmp_path / "train" / "1_x" / "img_0.png", (64, 64))
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :20] = 255  # 2.5 latent columns
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "img_0.png")
    from library.data.masks import reduce_mask

    batch = build(tmp_path).load_batch([0], 0, 0)
    reduced = reduce_mask(batch.masks, (8, 8))[0, 0, 0]
    assert reduced.tolist() == [1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_missing_corrupt_or_misshapen_masks_stop_with_one_line_naming_the_file(tmp_path: Path) -> None:
    masked_dataset(tmp_path, size=(64, 64), count=2)
    (tmp_path / "masks" / "img_1.png").unlink()
    with pytest.raises(DatasetError) as missing:
        build(tmp_path)
    assert len(missing.value.messages) == 1 and "1 image(s) have no mask" in str(missing.value)
    assert "img_1.png" in str(missing.value)

    (tmp_path / "masks" / "img_1.png").write_bytes(b"not a png")
    data = build(tmp_path)
    with pytest.raises(DatasetError) as corrupt:
        data.prepare()
    assert str(corrupt.value).count("\n") == 0 and str(tmp_path / "masks" / "img_1.png") in str(corrupt.value)

    half_mask(tmp_path / "masks" / "img_1.png", (64, 32))
    with pytest.raises(DatasetError, match=r"img_1.png: 64x32 does not have the shape of its image \(64x64\)"):
        build(tmp_path).prepare()

    half_mask(tmp_path / "masks" / "img_1.png", (128, 128))  # the same shape at twice the size: resized
    batch = build(tmp_path).load_batch([1], 0, 0)
    assert batch.masks[0, 0, :, :30].min() == 1 and batch.masks[0, 0, :, 34:].max() == 0
