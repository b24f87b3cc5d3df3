"""load_image_rgb on the odd files real datasets contain; list_images and list_folder ordering and filtering."""

from __future__ import annotations

from pathlib import Path

import image_samples as samples
import pytest
from PIL import Image

from library.data.images import (
    IMAGE_EXTENSIONS,
    ImageLoadError,
    list_folder,
    list_images,
    load_image_rgb,
    read_image_size,
)

WHITE = (255, 255, 255)


def _close(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 3) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = load_image_rgb(samples.exif_rotated_jpeg(tmp_path / "rotated.jpg"))
    assert image.size == (40, 60)
    # Rotating 90° clockwise turns the red left half into the top half.
    assert _close(image.getpixel((20, 5)), samples.RED, 8)
    assert _close(image.getpixel((20, 55)), samples.BLUE, 8)


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    image = load_image_rgb(samples.cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert image.mode == "RGB"
    assert _close(image.getpixel((5, 5)), samples.RED)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    image = load_image_rgb(samples.sixteen_bit_png(tmp_path / "deep.png", value=32896))
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == (128, 128, 128)


def test_palette_transparency_composited_on_white(tmp_path: Path) -> None:
    image = load_image_rgb(samples.palette_png_with_transparency(tmp_path / "palette.png"))
    assert image.getpixel((2, 5)) == WHITE
    assert image.getpixel((15, 5)) == samples.RED


def test_alpha_composited_on_white(tmp_path: Path) -> None:
    image = load_image_rgb(samples.rgba_png(tmp_path / "alpha.png"))
    assert image.getpixel((2, 5)) == WHITE
    assert image.getpixel((15, 5)) == samples.BLUE


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (samples.zero_byte, "empty file"),
        (samples.truncated_jpeg, "truncated"),
        (samples.not_an_image, "not an image"),
    ],
)
def test_broken_files_raise_typed_error_naming_path(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path / "broken.jpg")
    with pytest.raises(ImageLoadError) as caught:
        load_image_rgb(path)
    assert caught.value.path == path
    assert reason in caught.value.reason
    assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize(
    ("make", "reason"),
    [(samples.decompression_bomb_png, "too large to decode safely"), (samples.not_an_image, "not an image")],
)
def test_header_read_and_decode_refuse_alike(tmp_path: Path, make, reason: str) -> None:
    """The scan reads headers, training decodes pixels: both open files one way, so they refuse the same file
    with the same reason (a bomb is refused before its pixels are allocated)."""
    path = make(tmp_path / "hostile.png")
    refused = []
    for read in (read_image_size, load_image_rgb):
        with pytest.raises(ImageLoadError) as caught:
            read(path)
        refused.append(str(caught.value))
    assert refused[0] == refused[1] and reason in refused[0] and refused[0].startswith(str(path))


def test_non_ascii_file_name(tmp_path: Path) -> None:
    path = tmp_path / "猫の写真 图片.png"
    Image.new("RGB", (8, 6), samples.BLUE).save(path)
    assert list_images(tmp_path) == [path]
    assert load_image_rgb(path).getpixel((0, 0)) == samples.BLUE


def test_list_images_sorted_filtered_and_recursive(tmp_path: Path) -> None:
    names = ["b.PNG", "a.jpg", "c.webp", "notes.txt", ".hidden.png", "sub/z.bmp", "sub/deeper/y.jpeg"]
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("txt"):
            path.write_text("x", encoding="utf-8")
        else:
            Image.new("RGB", (4, 4)).save(path, format="PNG")
    flat = [path.relative_to(tmp_path).as_posix() for path in list_images(tmp_path)]
    deep = [path.relative_to(tmp_path).as_posix() for path in list_images(tmp_path, recursive=True)]
    assert flat == ["a.jpg", "b.PNG", "c.webp"]
    assert deep == ["a.jpg", "b.PNG", "c.webp", "sub/deeper/y.jpeg", "sub/z.bmp"]
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp"} <= IMAGE_EXTENSIONS


def test_list_folder_names_what_it_passes_over(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "good.txt").write_text("caption", encoding="utf-8")
    Image.new("RGB", (4, 4)).save(tmp_path / "anim.gif")
    (tmp_path / "README").write_text("notes", encoding="utf-8")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "10_subset").mkdir()
    (tmp_path / ".hidden.gif").write_bytes(b"")
    listing = list_folder(tmp_path, ".txt")
    assert listing.images == [tmp_path / "good.png"] == list_images(tmp_path)
    assert {path.name: reason for path, reason in listing.passed_over} == {
        "README": "no image file extension",
        "anim.gif": ".gif is not a supported image format",
        "dangling.jpg": "a symlink to a missing file",
        "folder.png": "a folder named like an image",
        "loop.png": "a symlink loop",
    }
