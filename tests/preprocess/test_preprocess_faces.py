"""Focal crop with OpenCV's real frontal-face Haar cascade (no injected detector).

The face is drawn at test time: a skin ellipse with dark eyes and brows, a shaded nose and a mouth, softened a
little; the light/dark pattern the cascade's features look for (dark eye band, brighter cheeks and nose bridge).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from preprocess.__main__ import main
from preprocess.focal import FocalWeights, focal_point, haar_face_detector

_BACKGROUND = (90, 90, 90)
_SCENE = (1200, 600)
_FACE_SIDE = 240
_FACE_LEFT, _FACE_TOP = 900, 180


def _drawn_face(side: int) -> Image.Image:
    """A front-facing cartoon face on the background colour, drawn at 200 px and resized to ``side``."""
    s = 200
    image = Image.new("RGB", (s, s), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.ellipse([0.18 * s, 0.10 * s, 0.82 * s, 0.95 * s], fill=(225, 190, 160))
    for centre in (0.36, 0.64):
        draw.ellipse([(centre - 0.09) * s, 0.38 * s, (centre + 0.09) * s, 0.48 * s], fill=(40, 30, 30))
        draw.rectangle([(centre - 0.11) * s, 0.31 * s, (centre + 0.11) * s, 0.34 * s], fill=(60, 40, 30))
    draw.polygon([(0.50 * s, 0.48 * s), (0.44 * s, 0.66 * s), (0.56 * s, 0.66 * s)], fill=(190, 150, 125))
    draw.ellipse([0.38 * s, 0.74 * s, 0.62 * s, 0.80 * s], fill=(130, 60, 60))
    return image.resize((side, side), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(1))


def _noise_patch(size: tuple[int, int]) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _scene(with_face: bool) -> Image.Image:
    """A wide grey picture: a noisy patch near the left edge and, optionally, a face near the right edge."""
    scene = Image.new("RGB", _SCENE, _BACKGROUND)
    scene.paste(_noise_patch((150, 200)), (60, 200))
    if with_face:
        scene.paste(_drawn_face(_FACE_SIDE), (_FACE_LEFT, _FACE_TOP))
    return scene


def _faces(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """Faces the real cascade finds in ``image``, in its own pixels (the way focal_point feeds it: grey)."""
    detect = haar_face_detector()
    assert detect is not None, "OpenCV with its Haar cascades is a pinned dependency"
    return list(detect(np.asarray(image.convert("L"), dtype=np.uint8)))


def test_real_cascade_finds_the_drawn_face_and_focal_crop_moves_to_it(tmp_path: Path) -> None:
    scene = _scene(with_face=True)
    thumbnail = scene.convert("L")
    thumbnail.thumbnail((256, 256))
    scale = thumbnail.width / scene.width
    [(x, y, w, h)] = _faces(thumbnail)
    centre_x, centre_y = (x + w / 2) / scale, (y + h / 2) / scale
    assert abs(centre_x - (_FACE_LEFT + _FACE_SIDE / 2)) < _FACE_SIDE / 4
    assert abs(centre_y - (_FACE_TOP + _FACE_SIDE / 2)) < _FACE_SIDE / 4

    face_x, _ = focal_point(scene, FocalWeights(face=1.0, entropy=0.0, edges=0.0))
    assert abs(face_x - (_FACE_LEFT + _FACE_SIDE / 2) / _SCENE[0]) < 0.05

    source = tmp_path / "src"
    source.mkdir()
    scene.save(source / "portrait.png")
    crops = {}
    for name, extra in (("centre", []), ("focal", []), ("focal-no-face", ["--focal-face-weight", "0"])):
        mode = "centre" if name == "centre" else "focal"
        out = tmp_path / name
        assert main(["crop", str(source), "--out", str(out), "--size", "512", "--mode", mode, *extra]) == 0
        crops[name] = Image.open(out / "portrait.png").convert("RGB")
    assert {crop.size for crop in crops.values()} == {(512, 512)}
    # The crop that uses the cascade holds the whole face, so the cascade finds it again there; the centre crop
    # and the crop without the face cue cut it off.
    assert len(_faces(crops["focal"])) == 1
    assert _faces(crops["centre"]) == [] and _faces(crops["focal-no-face"]) == []


def test_real_cascade_on_a_face_free_image_finds_nothing_and_crop_still_works(tmp_path: Path, samples) -> None:
    pictures = {"noise": _scene(with_face=False), "shapes": samples.shapes_image((800, 600), seed=3)}
    source = tmp_path / "src"
    source.mkdir()
    for name, picture in pictures.items():
        thumbnail = picture.convert("L")
        thumbnail.thumbnail((256, 256))
        assert _faces(thumbnail) == [], name
        picture.save(source / f"{name}.png")
    for mode in ("centre", "focal"):
        assert main(["crop", str(source), "--out", str(tmp_path / mode), "--size", "256", "--mode", mode]) == 0
        assert Image.open(tmp_path / mode / "shapes.png").size == (256, 256)
    # With no face the detail cues still pull the crop: the whole noisy patch is in it, none of it in the centre.
    patch_area = 150 * 200 * (256 / _SCENE[1]) ** 2
    assert _patch_pixels(tmp_path / "focal" / "noise.png") > 0.9 * patch_area
    assert _patch_pixels(tmp_path / "centre" / "noise.png") == 0


def _patch_pixels(path: Path) -> int:
    """Pixels of a crop that are clearly not the plain background."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    assert pixels.shape == (256, 256, 3)
    return int((np.abs(pixels - np.array(_BACKGROUND)).max(axis=2) > 20).sum())
