"""Epochs of batches: determinism, bucket purity, repeats, reg balance, sharding, batch contents, validation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import run_config, write_images

from library.config import ConfigError
from library.data.pipeline import TrainingData, build_training_data

MIXED_SIZES = [(64, 64), (64, 64), (96, 64), (96, 64), (64, 112), (128, 128), (64, 96)]


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Two training folders of mixed aspect ratios and a regularization folder."""
    write_images(tmp_path / "train" / "3_sks dog", MIXED_SIZES)
    write_images(tmp_path / "train" / "2_toy", [(64, 64), (96, 64), (96, 64)])
    write_images(tmp_path / "reg" / "1_dog", [(64, 64)] * 4, captions=[None] * 4)
    return tmp_path


def build(root: Path, **options: object) -> TrainingData:
    defaults = {"train_data_dir": root / "train", "reg_data_dir": root / "reg", "enable_bucket": True, "resolution": 96,
                "batch_size": 2, "shuffle_caption": True, "flip_aug": True}
    return build_training_data(run_config(**{**defaults, **options}))


def test_epoch_batches_deterministic_bucket_pure_and_complete(mixed: Path) -> None:
    data = build(mixed)
    again = build(mixed)
    first = data.epoch_batches(0)
    assert first == again.epoch_batches(0)
    assert first != data.epoch_batches(1)
    assert data.steps_per_epoch == len(first)
    for batch in first:
        assert 1 <= len(batch) <= 2
        assert len({data.train_records[i].plan.bucket for i in batch}) == 1
    for epoch in range(3):
        seen = Counter(i for batch in data.epoch_batches(epoch) for i in batch)
        assert seen == Counter({i: n for i, n in enumerate(data.repeats) if n})
    assert len({data.train_records[i].plan.bucket for batch in first for i in batch}) > 2
    for record, repeats in zip(data.train_records, data.repeats):
        if not record.is_reg:
            assert repeats == record.subset.num_repeats


def test_regularization_images_balance_training_samples(mixed: Path) -> None:
    data = build(mixed, prior_loss_weight=0.5)
    train_samples = sum(n for r, n in zip(data.train_records, data.repeats) if not r.is_reg)
    reg = [n for r, n in zip(data.train_records, data.repeats) if r.is_reg]
    assert train_samples == 7 * 3 + 3 * 2
    assert sum(reg) == train_samples and max(reg) - min(reg) <= 1
    batch = next(b for b in data.epoch_batches(0) if any(data.train_records[i].is_reg for i in b))
    loaded = data.load_batch(batch, 0, 0)
    expected = [0.5 if data.train_records[i].is_reg else 1.0 for i in batch]
    assert loaded.loss_weights.tolist() == expected
    assert all(caption == "dog" for i, caption in zip(batch, loaded.captions) if data.train_records[i].is_reg)


def test_sharding_two_processes_covers_every_sample_once(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "2_even", [(64, 64)] * 4)  # 8 samples -> 4 batches of 2
    shards = [build_training_data(run_config(train_data_dir=tmp_path / "train", batch_size=2, seed=7),
                                  process_index=p, num_processes=2) for p in range(2)]
    batches = [shard.epoch_batches(3) for shard in shards]
    assert len(batches[0]) == len(batches[1]) == shards[0].steps_per_epoch == 2
    combined = Counter(i for process in batches for batch in process for i in batch)
    assert combined == Counter({i: 2 for i in range(4)})


def test_sharding_uneven_batch_count_gives_equal_steps(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "1_odd", [(64, 64)] * 3)  # 3 batches of 1 over 2 processes
    shards = [build_training_data(run_config(train_data_dir=tmp_path / "train"), process_index=p, num_processes=2)
              for p in range(2)]
    batches = [shard.epoch_batches(0) for shard in shards]
    assert len(batches[0]) == len(batches[1]) == shards[0].steps_per_epoch == 2
    assert {i for process in batches for batch in process for i in batch} == {0, 1, 2}


def test_load_batch_reproducible_from_epoch_and_batch_number(mixed: Path) -> None:
    data = build(mixed, random_crop=True, color_aug=True, caption_tag_dropout_rate=0.2)
    batch = max(data.epoch_batches(2), key=len)
    first, second = data.load_batch(batch, 2, 5), data.load_batch(batch, 2, 5)
    assert first.captions == second.captions and torch.equal(first.pixels, second.pixels)
    assert first.crop_top_lefts == second.crop_top_lefts
    others = [data.load_batch(batch, 2, n) for n in range(6, 16)]
    assert any(o.captions != first.captions or not torch.equal(o.pixels, first.pixels) for o in others)
    assert first.latents is None and first.pixels.dtype == torch.float32
    width, height = data.train_records[batch[0]].plan.bucket
    assert first.pixels.shape == (len(batch), 3, height, width)
    assert -1.0 <= first.pixels.min() and first.pixels.max() <= 1.0
    assert first.target_sizes == [(height, width)] * len(batch)


def test_pixels_are_the_centre_crop_of_the_resized_image(tmp_path: Path) -> None:
    from PIL import Image

    path = write_images(tmp_path / "train" / "1_x", [(128, 64)])[0]
    image = Image.new("RGB", (128, 64), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 96, 64))  # blue centre square, red sides
    image.save(path)
    data = build_training_data(run_config(train_data_dir=tmp_path / "train"))
    batch = data.load_batch([0], 0, 0)
    assert batch.pixels.shape == (1, 3, 64, 64)
    assert torch.allclose(batch.pixels[0, :, 4:-4, 4:-4].mean(dim=(1, 2)), torch.tensor([-1.0, -1.0, 1.0]), atol=0.02)
    assert batch.original_sizes == [(64, 128)] and batch.crop_top_lefts == [(0, 32)]


def test_without_buckets_every_image_is_resized_and_cropped_to_the_resolution(mixed: Path) -> None:
    data = build(mixed, enable_bucket=False, resolution=64)
    assert {record.plan.bucket for record in data.train_records} == {(64, 64)}
    batch = data.load_batch(data.epoch_batches(0)[0], 0, 0)
    assert batch.pixels.shape[1:] == (3, 64, 64)


def test_dataset_toml_batch_sizes_per_dataset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "a", [(64, 64)] * 6)
    write_images(tmp_path / "b", [(64, 64)] * 6)
    toml = tmp_path / "ds.toml"
    toml.write_text(
        "[general]\nmin_bucket_reso = 64\n"
        "[[datasets]]\nresolution = 64\nbatch_size = 3\n[[datasets.subsets]]\nimage_dir = 'a'\n"
        "[[datasets]]\nresolution = 128\nbatch_size = 2\n[[datasets.subsets]]\nimage_dir = 'b'\n",
        encoding="utf-8",
    )
    data = build_training_data(run_config(dataset_config=toml))
    sizes = {(data.train_records[b[0]].dataset_index, len(b)) for b in data.epoch_batches(0)}
    assert sizes == {(0, 3), (1, 2)}
    assert data.steps_per_epoch == 2 + 3


def test_validation_split_is_seeded_and_disjoint(mixed: Path) -> None:
    data = build(mixed, validation_split=0.3)
    again = build(mixed, validation_split=0.3)
    held = {r.path for r in data.validation_records}
    assert held == {r.path for r in again.validation_records}
    assert len(held) == round(10 * 0.3)
    assert not held & {r.path for r in data.train_records}
    assert not any(r.is_reg for r in data.validation_records)
    used = {data.train_records[i].path for batch in data.epoch_batches(0) for i in batch}
    assert not held & used
    batches = data.validation_batches()
    assert sum(len(b) for b in batches) == len(held)
    for batch in batches:
        for index, caption in zip(batch.indices, batch.captions):
            assert caption == data.validation_records[index].caption  # no shuffle
    assert data.validation_batches() is batches


def test_validation_dir_never_trains(mixed: Path) -> None:
    write_images(mixed / "val", [(64, 64), (96, 64)], captions=["a, b, c", "d, e"])
    data = build(mixed, validation_dir=mixed / "val")
    assert {r.path.parent for r in data.validation_records} == {mixed / "val"}
    assert sorted(c for b in data.validation_batches() for c in b.captions) == ["a, b, c", "d, e"]
    assert not any(r.path.parent == mixed / "val" for r in data.train_records)


def test_metadata_counts_and_tables(mixed: Path) -> None:
    data = build(mixed)
    assert (data.num_train_images, data.num_reg_images) == (7 * 3 + 3 * 2, 4)
    assert data.dataset_dirs == {
        "3_sks dog": {"n_repeats": 3, "img_count": 7},
        "2_toy": {"n_repeats": 2, "img_count": 3},
    }
    assert data.reg_dataset_dirs == {"1_dog": {"n_repeats": 1, "img_count": 4}}
    tags = data.tag_frequency
    assert tags["3_sks dog"]["3_sks dog photo"] == 7 and tags["2_toy"]["tag1"] == 1
    buckets = data.bucket_info
    assert sum(b["count"] for b in buckets["buckets"].values()) == data.samples_per_epoch
    assert {tuple(b["resolution"]) for b in buckets["buckets"].values()} == {r.plan.bucket for r in data.train_records}
    assert json.loads(json.dumps(buckets)) == buckets and not data.has_validation


def test_summary_lists_folders_and_buckets(mixed: Path) -> None:
    lines = build(mixed).summary_lines()
    text = "\n".join(lines)
    assert "batch size 2" in text and "buckets 64-256 px" in text
    row = next(line for line in lines if line.startswith("3_sks dog "))
    # repeats, images, samples, smallest, largest, below 96x96, no caption, unreadable, passed over, class tokens
    assert row.split()[2:] == ["3", "7", "21", "64x64", "128x128", "6", "0", "0", "0", "sks", "dog"]
    reg_table = lines[lines.index("regularization folders:") + 1 :]
    assert reg_table[1].split() == ["1_dog", "1", "4", "27", "64x64", "64x64", "4", "4", "0", "0", "dog"]
    assert f"{27 + 27} samples per epoch" in text


def test_bucket_settings_of_a_dataset_file_are_checked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "a", [(64, 64)])
    toml = tmp_path / "ds.toml"
    toml.write_text("[[datasets]]\nresolution = 2048\nenable_bucket = true\n[[datasets.subsets]]\nimage_dir = 'a'\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dataset 0 .*: bucket settings: max_bucket_reso \(1024\) is smaller"):
        build_training_data(run_config(dataset_config=toml, max_bucket_reso=1024))


def test_more_processes_than_batches_still_step_together(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "1_one", [(64, 64)])
    shards = [build_training_data(run_config(train_data_dir=tmp_path / "train"), process_index=p, num_processes=3)
              for p in range(3)]
    assert [shard.epoch_batches(0) for shard in shards] == [[[0]], [[0]], [[0]]]


@pytest.mark.parametrize(
    ("train_samples", "reg_repeats", "expected"),
    [
        (10, [5, 5, 5], [5, 5, 0]),  # enough after two folders' worth: the rest is not used
        (7, [1, 1, 1], [3, 2, 2]),  # too few: extra passes add one repeat each
        (4, [2, 2], [2, 2]),
        (0, [3], [0]),
    ],
)
def test_regularization_balance_table(train_samples: int, reg_repeats: list[int], expected: list[int]) -> None:
    from library.data.batching import balanced_reg_repeats

    assert balanced_reg_repeats(train_samples, reg_repeats) == expected
