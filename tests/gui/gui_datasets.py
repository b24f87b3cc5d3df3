"""A small dataset for the dataset browser's tests: two `N_name` folders with a near-duplicate pair, an image
without a caption, an unreadable file, a multi-line caption and a caption that is markup."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from gui_server import REPO, GuiFolders
from PIL import Image

XSS_CAPTION = "dog, <img src=x onerror=alert(1)>"


def _picture(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth random picture: a few coloured blobs, so a resized copy keeps its difference hash."""
    cells = np.random.default_rng(seed).integers(0, 255, (5, 5, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize(size, Image.Resampling.BILINEAR)


def write_pets(dataset: Path) -> Path:
    """`10_sks dog`: a.png (64 px), b.png (a resized to 72 px), c.png (96 px, no caption), bad.png (not an image);
    `2_cat`: d.jpg (600x300, a caption on two lines)."""
    dog, cat = dataset / "10_sks dog", dataset / "2_cat"
    dog.mkdir(parents=True)
    cat.mkdir()
    original = _picture(1, (64, 64))
    original.save(dog / "a.png")
    original.resize((72, 72), Image.Resampling.BILINEAR).save(dog / "b.png")
    _picture(2, (96, 96)).save(dog / "c.png")
    (dog / "bad.png").write_bytes(b"not a picture")
    (dog / "a.txt").write_text("dog, running\n", encoding="utf-8")
    (dog / "b.txt").write_text(XSS_CAPTION, encoding="utf-8")
    _picture(3, (600, 300)).save(cat / "d.jpg", quality=90)
    (cat / "d.txt").write_text("cat\nsitting\n", encoding="utf-8")
    return dataset


def dataset_gui_folders(root: Path) -> GuiFolders:
    """The server's folders with no model (the browser needs none) and datasets/pets."""
    folders = GuiFolders(root / "runs", root / "models", root / "datasets", root / "configs")
    for folder in (folders.runs, folders.models):
        folder.mkdir()
    write_pets(folders.datasets / "pets")
    shutil.copytree(REPO / "configs", folders.configs)
    return folders


def fresh_dataset(folders: GuiFolders, name: str) -> Path:
    """A copy of datasets/pets under ``name``, for a test that edits it."""
    return Path(shutil.copytree(folders.datasets / "pets", folders.datasets / name))


def caption_files(dataset: Path) -> dict[str, bytes]:
    """Every caption file under ``dataset`` and its exact bytes."""
    return {path.relative_to(dataset).as_posix(): path.read_bytes() for path in sorted(dataset.rglob("*.txt"))}
