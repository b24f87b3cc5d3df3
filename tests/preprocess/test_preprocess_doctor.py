"""doctor: the dataset report (JSON schema, table, exit codes) and near-duplicate detection."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from library.data.buckets import BucketParams, bucket_table
from preprocess.__main__ import main
from preprocess.duplicates import fingerprint, near_duplicate_groups
from preprocess.report import dataset_report, find_image_folders


def _jpeg_copy(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def test_near_duplicates_found_across_resize_and_jpeg(samples) -> None:
    original = samples.shapes_image((400, 300), seed=11)
    images = [
        original,
        samples.shapes_image((400, 300), seed=12),
        original.resize((200, 150)),
        _jpeg_copy(original, 60),
        Image.new("RGB", (50, 50), (255, 0, 0)),
        Image.new("RGB", (50, 50), (0, 0, 255)),
    ]
    assert near_duplicate_groups([fingerprint(image) for image in images]) == [[0, 2, 3]]


def _training_dir(root: Path, samples) -> Path:
    dog = root / "10_sks dog"
    dog.mkdir(parents=True)
    samples.shapes_image((768, 512), seed=1).save(dog / "a.png")
    (dog / "a.txt").write_bytes("\ufeffsks dog, grass".encode())
    samples.shapes_image((300, 400), seed=2).save(dog / "b.jpg")
    (dog / "b.txt").write_text("sks dog, 草地", encoding="utf-8")
    samples.shapes_image((768, 512), seed=1).resize((384, 256)).save(dog / "a_small.png")
    samples.truncated_jpeg(dog / "broken.jpg")
    cats = root / "2_cat"
    cats.mkdir()
    samples.shapes_image((1024, 1024), seed=3).save(cats / "c.png")
    (cats / "c.txt").write_text("cat", encoding="utf-8")
    return root


@pytest.mark.slow
def test_doctor_json_subprocess(tmp_path: Path, run_cli, samples) -> None:
    root = _training_dir(tmp_path / "train", samples)
    result = run_cli("doctor", root, "--json", "--resolution", "512")
    assert result.returncode == 1, result.stderr  # the truncated JPEG blocks training
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    folders = {Path(folder["path"]).name: folder for folder in report["folders"]}
    assert list(folders) == ["10_sks dog", "2_cat"]
    dog, cat = folders["10_sks dog"], folders["2_cat"]
    assert (dog["repeats"], dog["class_tokens"], dog["images"], dog["samples"]) == (10, "sks dog", 3, 30)
    assert [Path(item["path"]).name for item in dog["unreadable_images"]] == ["broken.jpg"]
    assert [Path(path).name for path in dog["missing_captions"]] == ["a_small.png"]
    assert dog["below_resolution"] == 2
    assert dog["smallest"] == [384, 256] and dog["largest"] == [768, 512]
    expected = bucket_table([(768, 512), (300, 400), (384, 256)], BucketParams())
    assert dog["buckets"] == {f"{w}x{h}": count for (w, h), count in expected.items()}
    assert dict(dog["top_tags"]) == {"sks dog": 2, "grass": 1, "草地": 1}
    assert cat["samples"] == 2 and report["totals"]["samples_per_epoch"] == 32
    assert report["totals"]["images"] == 4
    assert [[Path(path).name for path in group] for group in report["near_duplicates"]] == [["a.png", "a_small.png"]]
    errors = [problem for problem in report["problems"] if problem["severity"] == "error"]
    assert len(errors) == 1 and "broken.jpg" in errors[0]["message"]


def test_skipping_bad_images_makes_it_pass_and_table_reads(tmp_path: Path, samples, capsys) -> None:
    root = _training_dir(tmp_path, samples)
    assert main(["doctor", str(root), "--skip-bad-images"]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("folder"))
    dog_row = next(line for line in table.splitlines() if line.startswith("10_sks dog"))
    assert header.split()[:4] == ["folder", "repeats", "images", "samples"]
    assert dog_row.split()[2:6] == ["10", "3", "30", "384x256"]
    assert "WARNING" in table and "broken.jpg" in table and "OK: ready to train" in table


def test_blocking_problems(tmp_path: Path, samples) -> None:
    empty = tmp_path / "5_empty"
    empty.mkdir()
    uncaptioned = tmp_path / "photos"
    uncaptioned.mkdir()
    samples.shapes_image((512, 512), seed=4).save(uncaptioned / "x.png")
    report = dataset_report([empty, uncaptioned], BucketParams())
    messages = [(problem.severity, Path(problem.folder).name, problem.message) for problem in report.problems]
    assert ("error", "5_empty", "no readable images") in messages
    assert any(
        severity == "error" and folder == "photos" and "no class tokens" in text for severity, folder, text in messages
    )
    assert not report.ok
    assert main(["doctor", str(empty)]) == 1


def test_find_image_folders_and_no_upscale(tmp_path: Path, samples) -> None:
    root = _training_dir(tmp_path, samples)
    samples.shapes_image((64, 64), seed=5).save(root / "loose.png")
    assert [path.name for path in find_image_folders(root)] == [root.name, "10_sks dog", "2_cat"]
    report = dataset_report([root / "2_cat"], BucketParams(no_upscale=True, resolution=(768, 768)))
    assert report.folders[0].buckets == {"768x768": 1}
    assert report.folders[0].below_resolution == 0
