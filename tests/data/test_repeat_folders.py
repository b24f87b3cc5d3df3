"""``N_name`` folder names: one reading for the training data pipeline and the dataset doctor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_fixtures import run_config, write_images

from library.config import ConfigError
from library.data.dataset_config import blueprints_from_config
from library.data.repeat_folders import (
    ZERO_REPEATS,
    RepeatFolder,
    RepeatFolderError,
    parse_repeat_folder,
    repeat_folder_name,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("10_sks dog", RepeatFolder(10, "sks dog")),
        ("10_sks_dog", RepeatFolder(10, "sks_dog")),
        ("007_ bond ", RepeatFolder(7, "bond")),
        ("1_", RepeatFolder(1, None)),
        ("0_off", RepeatFolder(0, "off")),
        ("dogs", None),
        ("3d_renders", None),
        ("10 dogs", None),
    ],
)
def test_folder_names(name: str, expected: RepeatFolder | None) -> None:
    assert parse_repeat_folder(Path("train") / name) == expected


@pytest.mark.parametrize("name", ["1.5_dog", "-2_dog", "3._dog"])
def test_a_number_that_is_not_a_count_is_refused(name: str) -> None:
    with pytest.raises(RepeatFolderError) as caught:
        parse_repeat_folder(Path("train") / name)
    assert str(caught.value).startswith(f"{Path('train') / name}: the repeat count")
    assert "must be a whole number" in caught.value.reason


def test_written_names_read_back() -> None:
    assert parse_repeat_folder(Path(repeat_folder_name(3, "sks dog"))) == RepeatFolder(3, "sks dog")


def _doctor(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "preprocess", "doctor", str(folder)],
        cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow
def test_training_and_doctor_refuse_a_malformed_name_alike(tmp_path: Path) -> None:
    train = tmp_path / "train"
    write_images(train / "2_dog", [(64, 64)], ["dog"])
    write_images(train / "1.5_cat", [(64, 64)], ["cat"])
    with pytest.raises(RepeatFolderError) as parsed:
        parse_repeat_folder(train / "1.5_cat")
    expected = str(parsed.value)

    with pytest.raises(ConfigError) as training:
        blueprints_from_config(run_config(train_data_dir=train).dataset)
    assert str(training.value) == f"dataset.train_data_dir: {expected}"

    doctor = _doctor(train)
    assert doctor.returncode == 1, doctor.stderr
    assert f"ERROR: {expected}" in doctor.stdout.splitlines()


@pytest.mark.slow
def test_training_skips_and_doctor_warns_about_zero_repeats(tmp_path: Path) -> None:
    train = tmp_path / "train"
    write_images(train / "2_dog", [(64, 64)], ["dog"])
    write_images(train / "0_cat", [(64, 64)], ["cat"])
    (dataset,) = blueprints_from_config(run_config(train_data_dir=train).dataset)
    assert [subset.image_dir.name for subset in dataset.subsets] == ["2_dog"]

    doctor = _doctor(train)
    assert doctor.returncode == 0, doctor.stderr
    assert f"WARNING: {train / '0_cat'}: {ZERO_REPEATS}" in doctor.stdout.splitlines()
