"""Masked loss in the preprocess commands: crop carries mask files and alpha channels along; the doctor counts the
images with a mask and names those without."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.__main__ import main


def _image(path: Path, size: tuple[int, int], alpha: bool = False) -> None:
    """Red left half, blue right half (the right half transparent with ``alpha``)."""
    width, height = size
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[:, : width // 2] = (230, 20, 20, 255)
    pixels[:, width // 2 :] = (20, 20, 230, 0 if alpha else 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels if alpha else pixels[..., :3]).save(path)


def _mask(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


def _agrees(image: Path, mask: np.ndarray) -> None:
    """The mask is white where the image is clearly red and black where it is clearly blue (the image's and the
    mask's resampling filters differ, so a pixel on the border is partly both)."""
    pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.int32)
    red, blue = pixels[..., 0] > 200, pixels[..., 2] > 200
    assert red.sum() + blue.sum() > 0.8 * red.size
    assert (mask[red] > 200).all() and (mask[blue] < 55).all()


def test_crop_cuts_mask_files_like_their_images_including_tiles_and_flips(tmp_path: Path) -> None:
    source, masks = tmp_path / "src", tmp_path / "masks"
    _image(source / "10_x" / "wide.png", (300, 100))
    _image(source / "10_x" / "square.jpg", (200, 200))
    _mask(masks / "10_x" / "wide.png", (300, 100))
    _mask(masks / "10_x" / "square.png", (100, 100))  # half the image's size: scaled to it
    out, mask_out = tmp_path / "out", tmp_path / "mask_out"
    assert main(["crop", str(source), "--out", str(out), "--size", "64", "--split", "--flip",
                 "--mask-dir", str(masks), "--mask-out", str(mask_out)]) == 0
    written = sorted(path.relative_to(out) for path in out.rglob("*.png"))
    assert written == sorted(path.relative_to(mask_out) for path in mask_out.rglob("*.png"))
    assert any("tile" in str(path) for path in written) and any("flip" in str(path) for path in written)
    for relative in written:
        mask = np.asarray(Image.open(mask_out / relative))
        assert mask.shape == Image.open(out / relative).size[::-1]
        _agrees(out / relative, mask)


def test_crop_keeps_the_alpha_channel_and_names_images_without_a_mask(tmp_path: Path, capsys) -> None:
    source = tmp_path / "src"
    _image(source / "a.png", (128, 96), alpha=True)
    _image(source / "b.png", (128, 96))
    out = tmp_path / "out"
    assert main(["crop", str(source), "--out", str(out), "--size", "64", "--flip"]) == 0
    for name in ("a.png", "a-flip.png"):
        cropped = Image.open(out / name)
        assert cropped.mode == "RGBA" and cropped.size == (64, 64)
        rgb = np.asarray(cropped.convert("RGB"), dtype=np.int32)
        alpha = np.asarray(cropped.getchannel("A"))
        opaque, clear = alpha == 255, alpha == 0
        assert opaque.any() and clear.any()
        assert (rgb[opaque][:, 0] > 200).all()  # the visible half is the red one
    assert Image.open(out / "b.png").mode == "RGB"

    masks = tmp_path / "masks"
    _mask(masks / "a.png", (128, 96))
    capsys.readouterr()
    assert main(["crop", str(source), "--out", str(tmp_path / "out2"), "--size", "64",
                 "--mask-dir", str(masks), "--mask-out", str(tmp_path / "m2")]) == 0
    assert any("b.png" in line and "no mask in" in line for line in capsys.readouterr().out.splitlines())
    assert [path.name for path in (tmp_path / "m2").iterdir()] == ["a.png"]
    assert main(["crop", str(source), "--out", str(tmp_path / "o3"), "--size", "64", "--mask-dir", str(masks)]) == 2


def test_doctor_counts_images_with_a_mask_and_names_those_without(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "train" / "10_x"
    for name in ("a.png", "b.png", "c.png"):
        _image(folder / name, (64, 64), alpha=name != "c.png")
        (folder / name).with_suffix(".txt").write_text("x", encoding="utf-8")
    assert main(["doctor", str(tmp_path / "train"), "--resolution", "64", "--masked-loss"]) == 0
    text = capsys.readouterr().out
    assert "masks in 10_x: 2 of 3 image(s); without: c.png (no alpha channel: weighs 1 everywhere)" in text
    assert "WARNING" in text and "1 image(s) without a mask" in text

    masks = tmp_path / "masks"
    _mask(masks / "a.png", (64, 64))
    (masks / "b.png").write_bytes(b"broken")
    assert main(["doctor", str(tmp_path / "train"), "--resolution", "64", "--mask-dir", str(masks), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    folder_report = report["folders"][0]
    assert folder_report["masks"] == 1
    reasons = {Path(item["path"]).name: item["reason"] for item in folder_report["without_mask"]}
    assert reasons["c.png"] == f"no mask in {masks}"
    assert str(masks / "b.png") in reasons["b.png"]
    assert any(problem["severity"] == "error" and "2 image(s) without a mask" in problem["message"]
               for problem in report["problems"])

    assert main(["doctor", str(tmp_path / "train"), "--resolution", "64"]) == 0
    assert "masks in" not in capsys.readouterr().out
