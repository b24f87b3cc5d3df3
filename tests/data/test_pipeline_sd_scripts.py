"""An sd-scripts dataset file as users have it (two subsets + a reg subset) runs unchanged, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_fixtures import run_config, write_images

from library.data.pipeline import build_training_data

USER_FILE = """\
[general]
shuffle_caption = true
caption_extension = '.txt'
keep_tokens = 1

# This is a DreamBooth-style dataset
[[datasets]]
resolution = 512
batch_size = 4
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
bucket_reso_steps = 64
bucket_no_upscale = false

  [[datasets.subsets]]
  image_dir = 'img/hoge'
  class_tokens = 'hoge girl'
  num_repeats = 10
  flip_aug = true

  [[datasets.subsets]]
  image_dir = 'img/fuga'
  class_tokens = 'fuga boy'
  keep_tokens = 3
  caption_dropout_rate = 0.1
  caption_tag_dropout_rate = 0.1

  [[datasets.subsets]]
  is_reg = true
  image_dir = 'img/reg'
  class_tokens = 'human'
  keep_tokens = 1
"""


def test_user_dataset_file_runs_unchanged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # sd-scripts reads relative image_dir from the working directory
    write_images(tmp_path / "img" / "hoge", [(64, 64), (64, 96), (96, 64)],
                 captions=["hoge girl, smile, red hair", "hoge girl, standing", None])
    write_images(tmp_path / "img" / "fuga", [(64, 64), (80, 64)], captions=["fuga boy, cap, blue, outdoors", None])
    write_images(tmp_path / "img" / "reg", [(64, 64)] * 5, captions=[None] * 5)
    toml = tmp_path / "my_dataset.toml"
    toml.write_text(USER_FILE, encoding="utf-8")

    data = build_training_data(run_config(dataset_config=toml, prior_loss_weight=0.7))
    data.prepare()
    (dataset,) = data.datasets
    assert (dataset.resolution, dataset.batch_size, dataset.enable_bucket) == ((512, 512), 4, True)
    reg_samples = sum(n for r, n in zip(data.train_records, data.repeats) if r.is_reg)
    assert reg_samples == 3 * 10 + 2 * 1
    assert data.samples_per_epoch == 2 * reg_samples

    seen = []
    for number, batch in enumerate(data.epoch_batches(0)):
        loaded = data.load_batch(batch, 0, number)
        width, height = data.train_records[batch[0]].plan.bucket
        assert loaded.pixels.shape == (len(batch), 3, height, width)
        assert max(width, height) >= 512
        seen += list(zip(batch, loaded.captions, loaded.loss_weights.tolist()))
    for index, caption, weight in seen:
        record = data.train_records[index]
        assert weight == pytest.approx(0.7 if record.is_reg else 1.0)
        if record.subset.class_tokens == "hoge girl":
            assert caption.startswith("hoge girl")  # keep_tokens = 1 from [general]
        if record.is_reg:
            assert caption == "human"

    assert data.dataset_dirs == {"hoge": {"n_repeats": 10, "img_count": 3}, "fuga": {"n_repeats": 1, "img_count": 2}}
    assert (data.num_train_images, data.num_reg_images) == (32, 5)
    hoge_row = next(line for line in data.summary_lines() if line.startswith("hoge "))
    assert hoge_row.split()[1:4] == ["10", "3", "30"] and hoge_row.endswith("  hoge girl")
