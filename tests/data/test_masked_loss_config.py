"""Masked loss options: the run config's ``masked_loss`` / ``mask_dir`` through TOML and the command line, the mask
folder layout of ``N_name`` folders, and an sd-scripts dataset TOML's ``alpha_mask`` / ``conditioning_data_dir``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_fixtures import run_config, write_images

from library.config import ConfigError, load_config
from library.data.dataset_config import blueprints_from_config
from library.data.pipeline import build_training_data


def _run_file(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "run.toml"
    model = "[model]\npretrained_model_name_or_path = 'base.safetensors'\n"
    path.write_text(f"{model}[dataset]\ntrain_data_dir = 'train'\n{dataset}\n")
    return path


def test_masked_loss_and_mask_dir_from_toml_and_command_line(tmp_path: Path) -> None:
    in_file = load_config(_run_file(tmp_path, f"masked_loss = true\nmask_dir = '{tmp_path}'"))
    assert in_file.dataset.masked_loss and in_file.dataset.mask_dir == str(tmp_path)
    flags = load_config(_run_file(tmp_path, ""), ["--masked_loss", "--dataset.mask_dir", str(tmp_path)])
    assert flags.dataset.masked_loss and flags.dataset.mask_dir == str(tmp_path)
    assert not load_config(_run_file(tmp_path, "masked_loss = true"), ["--masked_loss", "false"]).dataset.masked_loss
    with pytest.raises(ConfigError, match=r"dataset\.mask_dir.*masked_loss = true"):
        load_config(_run_file(tmp_path, f"mask_dir = '{tmp_path}'"))


def test_repeat_folders_take_their_masks_from_a_same_named_folder_or_the_mask_dir(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "10_a", [(64, 64)])
    write_images(tmp_path / "train" / "5_b", [(64, 64)])
    write_images(tmp_path / "reg" / "1_c", [(64, 64)])
    (tmp_path / "masks" / "10_a").mkdir(parents=True)
    config = run_config(train_data_dir=tmp_path / "train", reg_data_dir=tmp_path / "reg", masked_loss=True,
                        mask_dir=tmp_path / "masks")
    subsets = {subset.image_dir.name: subset for subset in blueprints_from_config(config.dataset)[0].subsets}
    assert subsets["10_a"].mask_dir == tmp_path / "masks" / "10_a"
    assert subsets["5_b"].mask_dir == tmp_path / "masks"
    assert not subsets["1_c"].masked  # class images are never masked
    alpha = run_config(train_data_dir=tmp_path / "train", masked_loss=True)
    assert all(s.alpha_mask and s.mask_dir is None for s in blueprints_from_config(alpha.dataset)[0].subsets)
    plain = run_config(train_data_dir=tmp_path / "train")
    assert not any(subset.masked for subset in blueprints_from_config(plain.dataset)[0].subsets)


def _dataset_file(tmp_path: Path, subsets: str, name: str = "dataset.toml") -> Path:
    path = tmp_path / name
    path.write_text(f"[general]\nresolution = 64\n[[datasets]]\n{subsets}", encoding="utf-8")
    return path


def test_sd_scripts_dataset_file_alpha_mask_and_conditioning_data_dir(tmp_path: Path) -> None:
    for name in ("a", "b", "reg"):
        write_images(tmp_path / name, [(64, 64)])
    (tmp_path / "a_masks").mkdir()
    write_images(tmp_path / "a_masks", [(64, 64)])  # img_0.png: the mask of a/img_0.png
    dataset = _dataset_file(tmp_path, f"""
[[datasets.subsets]]
image_dir = '{tmp_path / "a"}'
conditioning_data_dir = '{tmp_path / "a_masks"}'
[[datasets.subsets]]
image_dir = '{tmp_path / "b"}'
alpha_mask = true
[[datasets.subsets]]
image_dir = '{tmp_path / "reg"}'
is_reg = true
""")
    data = build_training_data(run_config(dataset_config=dataset, masked_loss=True))
    by_folder = {record.subset.image_dir.name: record for record in data.train_records}
    assert by_folder["a"].mask_path == tmp_path / "a_masks" / "img_0.png"
    assert by_folder["b"].subset.alpha_mask and by_folder["b"].mask_path is None
    assert not by_folder["reg"].subset.masked

    # alpha_mask alone turns alpha masks on for its subset, as in sd-scripts; the mask folder needs masked_loss
    alpha_subset = f"[[datasets.subsets]]\nimage_dir = '{tmp_path / 'b'}'\nalpha_mask = true\n"
    only_alpha = _dataset_file(tmp_path, alpha_subset, "alpha.toml")
    subset = blueprints_from_config(run_config(dataset_config=only_alpha).dataset)[0].subsets[0]
    assert subset.alpha_mask and subset.masked
    with pytest.raises(ConfigError, match=r"conditioning_data_dir: masks are used only with dataset.masked_loss"):
        blueprints_from_config(run_config(dataset_config=dataset).dataset)
