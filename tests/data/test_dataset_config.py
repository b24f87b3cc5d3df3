"""sd-scripts dataset TOMLs and N_name folders resolved to blueprints: fallback order, paths, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_fixtures import run_config, write_images

from library.config import ConfigError
from library.data.dataset_config import blueprints_from_config, validation_subsets

REALISTIC_TOML = """
[general]
shuffle_caption = true
caption_extension = '.txt'
keep_tokens = 1

[[datasets]]
resolution = 512
batch_size = 4
enable_bucket = true

  [[datasets.subsets]]
  image_dir = '{hoge}'
  class_tokens = 'hoge girl'
  num_repeats = 10

  [[datasets.subsets]]
  image_dir = '{fuga}'
  class_tokens = 'fuga boy'
  keep_tokens = 3
  flip_aug = true

  [[datasets.subsets]]
  is_reg = true
  image_dir = '{reg}'
  class_tokens = 'human'
  keep_tokens = 1

[[datasets]]
resolution = [768, 512]
batch_size = 2
caption_extension = '.caption'

  [[datasets.subsets]]
  image_dir = '{hoge}'
  caption_prefix = 'masterpiece'
"""


def write_toml(tmp_path: Path, text: str, name: str = "dataset.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def folders(tmp_path: Path) -> dict[str, Path]:
    made = {name: tmp_path / "images" / name for name in ("hoge", "fuga", "reg")}
    for folder in made.values():
        write_images(folder, [(64, 64)])
    return made


def load(path: Path, **dataset: object):
    return blueprints_from_config(run_config(dataset_config=path, **dataset).dataset)


def test_fallback_subset_then_dataset_then_general_then_run_config(tmp_path: Path) -> None:
    dirs = folders(tmp_path)
    path = write_toml(tmp_path, REALISTIC_TOML.format(**dirs))
    first, second = load(path, caption_suffix="from run config", random_crop=True)
    assert (first.resolution, first.batch_size, first.enable_bucket) == ((512, 512), 4, True)
    assert (second.resolution, second.batch_size) == ((768, 512), 2)
    assert second.enable_bucket is False  # the run config's default
    hoge, fuga, reg = first.subsets
    expected = {
        # subset: (image_dir, repeats, class tokens, is_reg, keep_tokens, flip_aug, caption extension)
        hoge: (dirs["hoge"], 10, "hoge girl", False, 1, False, ".txt"),
        fuga: (dirs["fuga"], 1, "fuga boy", False, 3, True, ".txt"),
        reg: (dirs["reg"], 1, "human", True, 1, False, ".txt"),
        second.subsets[0]: (dirs["hoge"], 1, None, False, 1, False, ".caption"),
    }
    for subset, values in expected.items():
        got = (subset.image_dir, subset.num_repeats, subset.class_tokens, subset.is_reg, subset.keep_tokens,
               subset.flip_aug, subset.caption_extension)
        assert got == values
        assert subset.shuffle_caption is True  # [general]
        assert subset.caption_suffix == "from run config"  # nothing in the file: run config
        assert subset.random_crop is True
    assert second.subsets[0].caption_prefix == "masterpiece"
    assert hoge.caption_prefix == ""


def test_relative_image_dir_prefers_working_directory_then_toml_folder(tmp_path: Path, monkeypatch) -> None:
    beside_toml = tmp_path / "project" / "imgs"
    in_cwd = tmp_path / "cwd" / "imgs"
    write_images(beside_toml, [(64, 64)])
    path = write_toml(tmp_path / "project", "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'imgs'\n")
    monkeypatch.chdir(tmp_path)
    assert load(path)[0].subsets[0].image_dir == beside_toml
    write_images(in_cwd, [(64, 64)])
    monkeypatch.chdir(tmp_path / "cwd")
    assert load(path)[0].subsets[0].image_dir == in_cwd


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "[general]\nshuffle_captions = true\n",
            "general.shuffle_captions: unknown key — did you mean 'shuffle_caption'?",
        ),
        ("[[datasets]]\nresolutoin = 512\n", "datasets[0].resolutoin: unknown key — did you mean 'resolution'?"),
        (
            "[[datasets]]\n[[datasets.subsets]]\nimage_dir = '{img}'\ntoken_warmup_step = 10\n",
            "datasets[0].subsets[0]: the sd-scripts option 'token_warmup_step' is not supported by Furnace; remove it",
        ),
        (
            "[[datasets]]\n[[datasets.subsets]]\nimage_dir = '{img}'\nnum_repeats = 0\n",
            "datasets[0].subsets[0].num_repeats: input should be greater than or equal to 1 (got 0)",
        ),
        ("[[datasets]]\nresolution = 100\n", "datasets[0].resolution: each side must be a multiple of 8"),
        (
            "[[datasets]]\n[[datasets.subsets]]\nimage_dir = '{img}'\ncaption_extension = 'a/b'\n",
            "datasets[0].subsets[0].caption_extension: must be a file extension like '.txt' (got 'a/b')",
        ),
        ("[[datasets]]\n[[datasets.subsets]]\nclass_tokens = 'sks'\n", "datasets[0].subsets[0]: image_dir is required"),
        (
            "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'no/such/dir'\n",
            "datasets[0].subsets[0].image_dir: folder not found: 'no/such/dir'",
        ),
        ("[general]\nkeep_tokens = 1\n", "no [[datasets]] table"),
        ("[[datasets]]\nbatch_size = 2\n", "datasets[0]: no [[datasets.subsets]]"),
        ("[[datasets]\n", "invalid TOML"),
    ],
)
def test_dataset_file_errors_name_file_and_key(tmp_path: Path, body: str, expected: str) -> None:
    image_dir = tmp_path / "img"
    write_images(image_dir, [(64, 64)])
    path = write_toml(tmp_path, body.format(img=image_dir))
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert str(path) in message and expected in message
    assert "Traceback" not in message


def test_missing_dataset_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset config file not found"):
        load(tmp_path / "absent.toml")


def test_repeat_folders_and_reg_dir(tmp_path: Path) -> None:
    train, reg = tmp_path / "train", tmp_path / "reg"
    write_images(train / "10_sks dog", [(64, 64)])
    write_images(train / "3_other", [(64, 64)])
    write_images(train / "plain", [(64, 64)])
    write_images(reg / "1_dog", [(64, 64)])
    (train / ".hidden").mkdir()
    (dataset,) = blueprints_from_config(run_config(train_data_dir=train, reg_data_dir=reg, num_repeats=2).dataset)
    got = [(s.image_dir.name, s.num_repeats, s.class_tokens, s.is_reg) for s in dataset.subsets]
    assert got == [("10_sks dog", 10, "sks dog", False), ("3_other", 3, "other", False), ("plain", 2, None, False),
                   ("1_dog", 1, "dog", True)]
    assert dataset.resolution == (64, 64)


def test_images_directly_in_train_dir_form_a_subset(tmp_path: Path) -> None:
    write_images(tmp_path / "train", [(64, 64)])
    (dataset,) = blueprints_from_config(run_config(train_data_dir=tmp_path / "train").dataset)
    assert [(s.image_dir, s.num_repeats) for s in dataset.subsets] == [(tmp_path / "train", 1)]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.train_data_dir: folder not found"):
        blueprints_from_config(run_config(train_data_dir=tmp_path / "absent").dataset)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images and no image folders"):
        blueprints_from_config(run_config(train_data_dir=tmp_path / "empty").dataset)


def test_validation_dir_subsets(tmp_path: Path) -> None:
    write_images(tmp_path / "val", [(64, 64)])
    write_images(tmp_path / "val" / "1_sks", [(64, 64)])
    write_images(tmp_path / "train" / "1_sks", [(64, 64)])
    section = run_config(train_data_dir=tmp_path / "train", validation_dir=tmp_path / "val").dataset
    assert [s.image_dir for s in validation_subsets(section)] == [tmp_path / "val", tmp_path / "val" / "1_sks"]
