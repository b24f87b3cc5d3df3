"""crop: sizes, modes, buckets, no-upscale, tiles, flips, captions, in-place and odd inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from library.data.buckets import BucketAssigner, BucketParams, make_buckets
from library.data.captions import read_caption
from preprocess.__main__ import main
from preprocess.focal import FocalWeights, focal_point


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _textured_right(size: tuple[int, int]) -> Image.Image:
    """Flat grey with a noisy patch near the right edge: the only detail in the picture."""
    pixels = np.full((size[1], size[0], 3), 128, dtype=np.uint8)
    patch = np.random.default_rng(0).integers(0, 255, (size[1] // 2, size[0] // 6, 3), dtype=np.uint8)
    top, left = size[1] // 4, size[0] - size[0] // 6 - 10
    pixels[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return Image.fromarray(pixels)


@pytest.mark.slow
def test_crop_cli_subprocess_with_odd_files(tmp_path: Path, run_cli, samples) -> None:
    source = tmp_path / "src"
    folder = source / "10_sks dog"
    folder.mkdir(parents=True)
    samples.shapes_image((800, 600), seed=1).save(folder / "a.jpg")
    (folder / "a.txt").write_bytes("\ufeffsks dog, 草地".encode())
    samples.exif_rotated_jpeg(folder / "rotated.jpg")
    samples.cmyk_jpeg(folder / "cmyk.jpg")
    samples.sixteen_bit_png(folder / "deep.png")
    samples.palette_png_with_transparency(folder / "palette.png")
    samples.zero_byte(folder / "zero.png")
    samples.truncated_jpeg(folder / "cut.jpg")
    samples.shapes_image((640, 640), seed=2).save(folder / "中文名.png")
    out = tmp_path / "out"
    result = run_cli("crop", source, "--out", out, "--size", "512", "--mode", "centre")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name, reason in (("zero.png", "empty file"), ("cut.jpg", "truncated")):
        assert any(name in line and reason in line for line in result.stdout.splitlines())
    cropped = out / "10_sks dog"
    assert _size(cropped / "a.png") == (512, 512)
    assert read_caption(cropped / "a.txt") == "sks dog, 草地"
    assert _size(cropped / "中文名.png") == (512, 512)
    assert _size(cropped / "rotated.png") == (40, 40)  # upright 40x60, not enlarged
    assert not (cropped / "zero.png").exists() and not (cropped / "cut.png").exists()
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        ["a.jpg", "a.txt", "rotated.jpg", "cmyk.jpg", "deep.png", "palette.png", "zero.png", "cut.jpg", "中文名.png"]
    )


def test_never_upscales_unless_asked(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.new("RGB", (300, 200), (9, 9, 9)).save(source / "small.png")
    assert main(["crop", str(source), "--out", str(tmp_path / "kept"), "--size", "512"]) == 0
    assert _size(tmp_path / "kept" / "small.png") == (200, 200)
    assert main(["crop", str(source), "--out", str(tmp_path / "big"), "--size", "512", "--upscale"]) == 0
    assert _size(tmp_path / "big" / "small.png") == (512, 512)


def test_resize_mode_keeps_aspect(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.new("RGB", (800, 400)).save(source / "wide.png")
    assert main(["crop", str(source), "--out", str(tmp_path / "out"), "--size", "512", "--mode", "resize"]) == 0
    assert _size(tmp_path / "out" / "wide.png") == (512, 256)


def test_focal_crop_keeps_the_detail(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _textured_right((900, 300)).save(source / "scene.png")
    for mode in ("centre", "focal"):
        assert main(["crop", str(source), "--out", str(tmp_path / mode), "--size", "256", "--mode", mode]) == 0
    centre = np.asarray(Image.open(tmp_path / "centre" / "scene.png"), dtype=np.float32)
    focal = np.asarray(Image.open(tmp_path / "focal" / "scene.png"), dtype=np.float32)
    assert centre.shape == focal.shape == (256, 256, 3)
    assert centre.std() < 1.0  # only the flat grey middle
    assert focal.std() > 20.0  # the noisy patch is inside the crop


def test_focal_point_weighs_faces() -> None:
    image = Image.new("RGB", (400, 200), (128, 128, 128))

    def one_face_top_left(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
        height, width = pixels.shape
        return [(0, 0, width // 4, height // 4)]

    x, y = focal_point(image, FocalWeights(face=1.0, entropy=0.0, edges=0.0), detect_faces=one_face_top_left)
    assert (round(x, 3), round(y, 3)) == (0.125, 0.125)
    assert focal_point(image, FocalWeights(), detect_faces=lambda pixels: []) == (0.5, 0.5)


def test_bucket_crops_land_on_bucket_sizes(tmp_path: Path, samples) -> None:
    source = tmp_path / "src"
    source.mkdir()
    sizes = {"wide.png": (1600, 700), "tall.png": (700, 1500), "square.png": (900, 900), "odd.png": (1000, 830)}
    for index, (name, size) in enumerate(sizes.items()):
        samples.shapes_image(size, seed=index).save(source / name)
    out = tmp_path / "out"
    assert (
        main(["crop", str(source), "--out", str(out), "--size", "512", "--buckets", "--bucket-reso-steps", "64"]) == 0
    )
    assigner = BucketAssigner(BucketParams(resolution=(512, 512)))
    buckets = make_buckets((512, 512))
    for name, size in sizes.items():
        assert _size(out / name) == assigner.plan(size).bucket
        assert _size(out / name) in buckets


def test_split_into_overlapping_tiles_with_captions(tmp_path: Path, samples) -> None:
    source = tmp_path / "src"
    source.mkdir()
    samples.shapes_image((300, 1200), seed=4).save(source / "strip.png")
    (source / "strip.txt").write_text("long strip", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["crop", str(source), "--out", str(out), "--size", "256", "--split", "--split-overlap", "0.25"]) == 0
    tiles = sorted(out.glob("strip-tile*.png"))
    # 1200 px scaled to 1024 px tall; 256 px tiles with >= 25 % overlap need 5 starts.
    assert len(tiles) == 5
    assert all(_size(tile) == (256, 256) for tile in tiles)
    assert all(read_caption(tile.with_suffix(".txt")) == "long strip" for tile in tiles)
    assert not (out / "strip.png").exists()


def test_flip_adds_mirrored_copies(tmp_path: Path, samples) -> None:
    source = tmp_path / "src"
    source.mkdir()
    samples.shapes_image((400, 300), seed=5).save(source / "pic.png")
    (source / "pic.txt").write_text("pic", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["crop", str(source), "--out", str(out), "--size", "256", "--flip"]) == 0
    original, flipped = Image.open(out / "pic.png"), Image.open(out / "pic-flip.png")
    assert np.array_equal(np.asarray(ImageOps.mirror(original)), np.asarray(flipped))
    assert read_caption(out / "pic-flip.txt") == "pic"


def test_in_place_replaces_sources_and_keeps_broken_files(tmp_path: Path, samples) -> None:
    samples.shapes_image((600, 400), seed=6).save(tmp_path / "a.jpg")
    samples.shapes_image((500, 500), seed=7).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("shared caption", encoding="utf-8")
    samples.zero_byte(tmp_path / "zero.jpg")
    assert main(["crop", str(tmp_path), "--in-place", "--size", "256"]) == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["a-jpg.png", "a-jpg.txt", "a.png", "a.txt", "zero.jpg"]
    assert _size(tmp_path / "a.png") == _size(tmp_path / "a-jpg.png") == (256, 256)
    assert read_caption(tmp_path / "a-jpg.txt") == read_caption(tmp_path / "a.txt") == "shared caption"


def test_dry_run_and_bad_arguments(tmp_path: Path, samples, capsys) -> None:
    source = tmp_path / "src"
    source.mkdir()
    samples.shapes_image((300, 300), seed=8).save(source / "x.jpg")
    assert main(["crop", str(source), "--in-place", "--dry-run", "--size", "128"]) == 0
    assert [path.name for path in source.iterdir()] == ["x.jpg"]
    assert "dry run" in capsys.readouterr().out
    assert main(["crop", str(source), "--out", str(source / "inside"), "--size", "128"]) == 2
    assert main(["crop", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--size", "128"]) == 2
    assert (
        main(["crop", str(source), "--out", str(tmp_path / "o"), "--size", "128", "--mode", "resize", "--split"]) == 2
    )
    assert "--split needs" in capsys.readouterr().err


def test_keep_folder_name_keeps_one_repeats_folder(tmp_path: Path, samples, capsys) -> None:
    folder = tmp_path / "src" / "10_sks dog"
    folder.mkdir(parents=True)
    samples.shapes_image((300, 200), seed=3).save(folder / "a.jpg")
    (folder / "a.txt").write_text("sks dog", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["crop", str(folder), "--out", str(out), "--size", "128", "--keep-folder-name"]) == 0
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*")) == [
        "10_sks dog", "10_sks dog/a.png", "10_sks dog/a.txt"
    ]
    assert _size(out / "10_sks dog" / "a.png") == (128, 128)
    assert main(["crop", str(folder), "--in-place", "--size", "128", "--keep-folder-name"]) == 2
    assert "--keep-folder-name needs --out" in capsys.readouterr().err
