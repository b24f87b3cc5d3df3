"""The dataset browser's thumbnail cache: an edited image's old thumbnail goes, and `prune` drops the thumbnails of
images deleted or changed since and keeps the most recently shown within the bound."""

from __future__ import annotations

import os

from PIL import Image

from library.gui.thumbnails import CACHE_FOLDER, prune, thumbnail


def _image(path, size, colour):
    Image.new("RGB", size, colour).save(path)
    return path


def test_an_edited_images_old_thumbnail_is_replaced(tmp_path):
    image = _image(tmp_path / "a.png", (300, 200), "red")
    first = thumbnail(image, tmp_path / "runs")
    assert thumbnail(image, tmp_path / "runs") == first   # cached
    _image(image, (200, 300), "blue")
    second = thumbnail(image, tmp_path / "runs")
    assert second != first and not first.exists()
    assert Image.open(second).size == (171, 256)
    assert list((tmp_path / "runs" / CACHE_FOLDER).iterdir()) == [second]


def test_prune_drops_gone_and_changed_images_then_the_least_recently_shown(tmp_path):
    runs = tmp_path / "runs"
    images = [_image(tmp_path / f"{name}.png", (64, 64), colour)
              for name, colour in (("gone", "red"), ("changed", "green"), ("old", "blue"), ("new", "white"),
                                   ("newer", "black"))]
    shown = {image.stem: thumbnail(image, runs) for image in images}
    for age, name in enumerate(("newer", "new", "old")):   # shown an hour apart, "newer" last
        os.utime(shown[name], (1e9 - 3600 * age, 1e9 - 3600 * age))
    images[0].unlink()
    stat = images[1].stat()
    os.utime(images[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # changed behind the cache's back
    (runs / CACHE_FOLDER / "foreign.jpg").write_bytes(b"not a thumbnail")

    assert prune(runs, keep=2) == 4
    assert sorted(entry.name for entry in (runs / CACHE_FOLDER).iterdir()) == sorted(
        [shown["new"].name, shown["newer"].name])
    assert prune(runs, keep=2) == 0
