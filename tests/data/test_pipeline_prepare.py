"""prepare(): full decode before training, bad images, latent cache (memory / disk, reuse, rebuild), text cache."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import image_samples
import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import run_config, write_images

from library.atomic_files import STALE_AFTER_SECONDS
from library.config import ConfigError
from library.data.images import read_image_size
from library.data.latent_cache import CACHE_DIR_NAME, encode_latents
from library.data.pipeline import build_training_data
from library.data.records import DatasetError
from library.data.transforms import make_sample
from library.models.families import get_family
from library.models.tiny import build_components, tiny_configs


@pytest.fixture(scope="module")
def components():
    family = get_family("sd1")
    return build_components(family, tiny_configs(family), seed=0)


@pytest.fixture
def vae(components):
    """The tiny VAE with ``encode`` calls counted in ``vae.calls``."""
    model = components.vae
    original = type(model).encode.__get__(model)
    model.calls = 0

    def counting_encode(*args, **kwargs):
        model.calls += 1
        return original(*args, **kwargs)

    model.encode = counting_encode
    yield model
    del model.encode


def build(root: Path, **options: object):
    return build_training_data(run_config(train_data_dir=root / "train", **options))


def prepared(root: Path, vae, **options: object):
    data = build(root, **options)
    data.prepare(vae, cache_latents=True, cache_to_disk=True)
    return data


def test_disk_cache_reused_then_rebuilt_when_image_or_resolution_changes(tmp_path: Path, vae) -> None:
    paths = write_images(tmp_path / "train" / "2_x", [(64, 64), (96, 64), (64, 64)])
    data = prepared(tmp_path, vae)
    assert vae.calls > 0
    cache_dir = tmp_path / "train" / "2_x" / CACHE_DIR_NAME
    assert len(list(cache_dir.glob("*.safetensors"))) == 3
    batch = data.load_batch(data.epoch_batches(0)[0], 0, 0)
    assert batch.pixels is None and batch.latents.shape[1:] == (4, 8, 8)

    vae.calls = 0
    again = prepared(tmp_path, vae)
    assert vae.calls == 0
    reloaded = again.load_batch(data.epoch_batches(0)[0], 0, 0)
    assert torch.equal(reloaded.latents, batch.latents)

    noise = np.random.default_rng(99).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(paths[0])
    prepared(tmp_path, vae)
    assert vae.calls == 1  # only the changed image, in one VAE batch

    vae.calls = 0
    prepared(tmp_path, vae, resolution=128)
    assert vae.calls > 0


def test_cache_rebuilt_when_the_vae_changes(tmp_path: Path, vae) -> None:
    write_images(tmp_path / "train" / "1_x", [(64, 64)])
    prepared(tmp_path, vae)
    weight = vae.encoder.conv_in.weight
    with torch.no_grad():
        weight.add_(0.01)
    try:
        vae.calls = 0
        prepared(tmp_path, vae)
        assert vae.calls == 1
    finally:
        with torch.no_grad():
            weight.sub_(0.01)


def test_cached_latents_are_scaled_means_of_the_centre_crop_and_its_mirror(tmp_path: Path, vae) -> None:
    write_images(tmp_path / "train" / "1_x", [(97, 64)])  # odd spare width: a mirrored crop starts 1 px later
    data = build(tmp_path, flip_aug=True)
    data.prepare(vae, cache_latents=True)  # in memory
    assert not (tmp_path / "train" / "1_x" / CACHE_DIR_NAME).exists()
    record = data.train_records[0]
    pixels = make_sample(Image.open(record.path).convert("RGB"), record.plan).pixels[None]
    factor = vae.config.scaling_factor
    flips = set()
    for number in range(12):
        batch = data.load_batch([0], 0, number)
        flips.add(batch.crop_top_lefts[0])
        mirrored = batch.crop_top_lefts[0] != (0, 16)
        expected = encode_latents(vae, torch.flip(pixels, dims=[-1]) if mirrored else pixels, factor)
        assert torch.allclose(batch.latents, expected, atol=1e-5)
    assert flips == {(0, 16), (0, 17)}  # both orientations are used


def test_unreadable_file_found_at_scan_stops_or_is_skipped(tmp_path: Path, caplog) -> None:
    write_images(tmp_path / "train" / "1_x", [(64, 64)] * 2)
    bad = image_samples.not_an_image(tmp_path / "train" / "1_x" / "broken.png")
    with pytest.raises(DatasetError) as caught:
        build(tmp_path)
    assert str(bad) in str(caught.value) and "on_bad_image = 'skip'" in str(caught.value)
    with caplog.at_level(logging.WARNING):
        data = build(tmp_path, on_bad_image="skip")
    assert bad not in {r.path for r in data.train_records} and len(data.train_records) == 2
    assert any(str(bad) in record.getMessage() for record in caplog.records)


def test_truncated_image_found_by_prepare_before_training(tmp_path: Path, caplog) -> None:
    write_images(tmp_path / "train" / "1_x", [(64, 64)] * 2)
    bad = tmp_path / "train" / "1_x" / "cut.png"
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(bad)
    bad.write_bytes(bad.read_bytes()[:3000])
    data = build(tmp_path)  # the header is fine: scanning cannot tell
    assert len(data.train_records) == 3
    with pytest.raises(DatasetError, match=str(bad)):
        data.prepare()
    skipping = build(tmp_path, on_bad_image="skip")
    with caplog.at_level(logging.WARNING):
        skipping.prepare()
    assert len(skipping.train_records) == 2 and skipping.steps_per_epoch == 2
    assert {i for b in skipping.epoch_batches(0) for i in b} == {0, 1}
    assert any(str(bad) in record.getMessage() for record in caplog.records)


def test_exif_orientation_is_read_from_the_header(tmp_path: Path) -> None:
    path = image_samples.exif_rotated_jpeg(tmp_path / "rotated.jpg")
    assert read_image_size(path) == (40, 60)
    sizes = [(w, h) for w in (64, 96) for h in (64, 80)]
    for index, size in enumerate(sizes):
        Image.new("RGB", size).save(tmp_path / f"{index}.png")
        assert read_image_size(tmp_path / f"{index}.png") == size


def test_text_encoder_cache_matches_direct_encoding(tmp_path: Path, components) -> None:
    from library.data.text_cache import TextEncoderCache
    from library.models.text_encoding import encode_captions
    from library.models.tokenizer import build_clip_tokenizer

    write_images(tmp_path / "train" / "1_x", [(64, 64)] * 3, captions=["a, b", "c", None])
    data = build(tmp_path, caption_prefix="photo of")
    captions = data.all_captions()
    assert captions == ["photo of a, b", "photo of c", "photo of x"]
    family, tokenizer, encoder = get_family("sd1"), build_clip_tokenizer(), components.text_encoders[0]
    encoded_batches = []

    def encode(texts: list[str]):
        encoded_batches.append(texts)
        return encode_captions(family, [tokenizer], [encoder], texts, 2)

    cache = TextEncoderCache(encode, batch_size=2)
    cache.build(captions)
    cache.build(captions)
    assert [len(texts) for texts in encoded_batches] == [2, 1]  # each caption once, in batches of 2
    batch = ["photo of c", "photo of a, b", "photo of c"]
    cached = cache.lookup(batch)
    with torch.no_grad():
        direct = encode_captions(family, [tokenizer], [encoder], batch, 2)
    assert torch.allclose(cached.hidden_states, direct.hidden_states, atol=1e-6)
    assert cached.pooled is None and len(encoded_batches) == 2
    with pytest.raises(KeyError, match="not in the text-encoder cache"):
        cache.lookup(["never seen"])


def test_caching_settings_conflicting_with_dataset_file_are_refused(tmp_path: Path) -> None:
    write_images(tmp_path / "a", [(64, 64)])
    toml = tmp_path / "ds.toml"
    toml.write_text(f"[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = '{tmp_path / 'a'}'\n"
                    "random_crop = true\nshuffle_caption = true\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        build_training_data(run_config(dataset_config=toml, cache_latents=True))
    assert "random_crop / color_aug cannot be combined with dataset.cache_latents" in str(caught.value)


def test_cache_files_are_written_atomically_and_stale_leftovers_removed(tmp_path: Path, vae) -> None:
    write_images(tmp_path / "train" / "1_x", [(64, 64)] * 2)
    cache_dir = tmp_path / "train" / "1_x" / CACHE_DIR_NAME
    cache_dir.mkdir()
    stale = cache_dir / ".img_0.png_64x64_64x64.safetensors.0badc0de.tmp"  # a killed run's half-written file
    stale.write_bytes(b"half")
    long_ago = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    live = cache_dir / ".img_1.png_64x64_64x64.safetensors.c0ffee00.tmp"  # another run writing right now
    live.write_bytes(b"being written")
    prepared(tmp_path, vae)
    cache_files = [path.name for path in cache_dir.glob("*.safetensors")]
    assert len(cache_files) == 2
    assert sorted(os.listdir(cache_dir)) == sorted([live.name, *cache_files])
