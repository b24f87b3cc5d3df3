"""The trainer's start-of-run report is the doctor's table: same rows for the same folders and bucket settings."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import image_samples as samples
from pipeline_fixtures import run_config

from library.data.pipeline import build_training_data
from library.data.records import DatasetError
from preprocess.__main__ import main

_BUCKETS = {"resolution": 64, "enable_bucket": True, "min_bucket_reso": 64, "max_bucket_reso": 256,
            "bucket_reso_steps": 16}
_DOCTOR_BUCKETS = ["--resolution", "64", "--min-bucket-reso", "64", "--max-bucket-reso", "256",
                   "--bucket-reso-steps", "16"]
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d INFO (.*)$")


def _dataset(root: Path) -> Path:
    """Two 'N_name' folders with odd files: a rotated JPEG, a 16-bit PNG, missing and empty captions, a 0-byte
    image, tags in UTF-8 with and without BOM."""
    toy = root / "5_sks toy"
    toy.mkdir(parents=True)
    samples.shapes_image((96, 64), seed=1).save(toy / "wide.png")
    (toy / "wide.txt").write_bytes("\ufeffsks toy, red, 草地".encode())
    samples.shapes_image((64, 96), seed=2).save(toy / "tall.png")
    (toy / "tall.txt").write_text("sks toy, blue", encoding="utf-8")
    samples.shapes_image((128, 128), seed=3).save(toy / "big.png")
    samples.exif_rotated_jpeg(toy / "rotated.jpg")  # stored 60x40, upright 40x60
    (toy / "rotated.txt").write_text("sks toy, red", encoding="utf-8")
    cat = root / "2_cat"
    cat.mkdir()
    samples.shapes_image((80, 64), seed=4).save(cat / "a.png")
    (cat / "a.txt").write_text("", encoding="utf-8")
    samples.sixteen_bit_png(cat / "deep.png")
    (cat / "deep.txt").write_text("cat, grey", encoding="utf-8")
    samples.zero_byte(cat / "broken.png")
    return root


def _doctor_table(root: Path, capsys) -> list[str]:
    """The doctor's folder table, bucket line and top-tag lines for ``root``."""
    assert main(["doctor", str(root), *_DOCTOR_BUCKETS, "--skip-bad-images"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("folder "))
    end = lines.index("", start)
    return lines[start:end]


def _contains_block(lines: list[str], block: list[str]) -> bool:
    return any(lines[index : index + len(block)] == block for index in range(len(lines) - len(block) + 1))


def test_pipeline_summary_has_the_doctors_table(tmp_path: Path, capsys) -> None:
    root = _dataset(tmp_path / "train")
    table = _doctor_table(root, capsys)
    cat_row, toy_row = table[1].split(), table[2].split()
    # folder, repeats, images, samples, smallest, largest, below 64x64, no caption, unreadable, passed over,
    # class tokens
    assert cat_row == ["2_cat", "2", "2", "4", "30x20", "80x64", "1", "1", "1", "0", "cat"]
    assert toy_row == ["5_sks", "toy", "5", "4", "20", "40x60", "128x128", "1", "1", "0", "0", "sks", "toy"]
    assert "top tags in 5_sks toy: sks toy (3), red (2), blue (1), 草地 (1)" in table

    data = build_training_data(run_config(train_data_dir=root, on_bad_image="skip", **_BUCKETS))
    lines = data.summary_lines()
    assert _contains_block(lines, table), "\n".join(["doctor:", *table, "trainer:", *lines])
    assert lines[0] == "dataset 0: 64x64, batch size 1, buckets 64-256 px, steps 16"
    assert any(line.startswith("near-duplicates: not checked at start") for line in lines)


def test_doctor_and_trainer_block_on_the_same_unreadable_images(tmp_path: Path, capsys) -> None:
    root = _dataset(tmp_path / "train")
    assert main(["doctor", str(root), *_DOCTOR_BUCKETS]) == 1
    assert "ERROR" in capsys.readouterr().out
    with pytest.raises(DatasetError, match=r"broken.png \(empty file"):
        build_training_data(run_config(train_data_dir=root, **_BUCKETS))
    # A file whose header reads but whose pixels do not: the trainer's start table (headers only) still counts it,
    # then the full decode before the first step stops the run, as the doctor's decode flags it.
    (root / "2_cat" / "broken.png").unlink()
    samples.truncated_jpeg(root / "2_cat" / "cut.jpg")
    assert main(["doctor", str(root), *_DOCTOR_BUCKETS]) == 1
    assert "cut.jpg" in capsys.readouterr().out
    data = build_training_data(run_config(train_data_dir=root, **_BUCKETS))
    with pytest.raises(DatasetError, match="cut.jpg"):
        data.prepare()


def _trainer_cli() -> ModuleType:
    """The trainer CLI helpers of tests/training (loaded by path: test folders are not packages)."""
    path = Path(__file__).resolve().parents[1] / "training" / "trainer_cli.py"
    spec = importlib.util.spec_from_file_location("trainer_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a real (1-step) training run; most of it is the CLI's start-up
def test_trainer_cli_logs_the_doctors_table_at_start(tmp_path: Path, capsys, tiny_model_factory) -> None:
    root = _dataset(tmp_path / "train")
    table = _doctor_table(root, capsys)
    cli = _trainer_cli()
    args = cli.base_args(tiny_model_factory("sd1").folder, root, tmp_path / "out", max_train_steps=1,
                         train_batch_size=1, enable_bucket="true", min_bucket_reso=64, max_bucket_reso=256,
                         bucket_reso_steps=16)
    result = cli.run_cli("train_network.py", [*args, "--dataset.on_bad_image", "skip"])
    logged = [match.group(1) for line in result.stderr.splitlines() if (match := _LOG_LINE.match(line))]
    assert _contains_block(logged, table), "\n".join(["doctor:", *table, "trainer log:", result.stderr])
    assert any("broken.png" in line and "skipping unreadable image" in line for line in result.stderr.splitlines())
