"""The dataset browser's thumbnail cache: an edited image's old thumbnail goes, `prune` drops the thumbnails of
images deleted or changed since and keeps the most recently shown within the bound, and a serving server keeps its
cache within `--max-thumbnails` by pruning in bulk once the thumbnails it makes pass the limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gui_datasets import dataset_gui_folders
from gui_server import GuiServer
from PIL import Image

from library.gui.settings import SettingsError, parse_settings
from library.gui.thumbnails import CACHE_FOLDER, ThumbnailCache, prune


def _image(path, size, colour):
    Image.new("RGB", size, colour).save(path)
    return path


def test_an_edited_images_old_thumbnail_is_replaced(tmp_path):
    image = _image(tmp_path / "a.png", (300, 200), "red")
    cache = ThumbnailCache(tmp_path / "runs")
    first = cache.thumbnail(image)
    assert cache.thumbnail(image) == first   # cached
    _image(image, (200, 300), "blue")
    second = cache.thumbnail(image)
    assert second != first and not first.exists()
    assert Image.open(second).size == (171, 256)
    assert list((tmp_path / "runs" / CACHE_FOLDER).iterdir()) == [second]


def test_prune_drops_gone_and_changed_images_then_the_least_recently_shown(tmp_path):
    runs = tmp_path / "runs"
    images = [_image(tmp_path / f"{name}.png", (64, 64), colour)
              for name, colour in (("gone", "red"), ("changed", "green"), ("old", "blue"), ("new", "white"),
                                   ("newer", "black"))]
    cache = ThumbnailCache(runs)
    shown = {image.stem: cache.thumbnail(image) for image in images}
    for age, name in enumerate(("newer", "new", "old")):   # shown an hour apart, "newer" last
        os.utime(shown[name], (1e9 - 3600 * age, 1e9 - 3600 * age))
    images[0].unlink()
    stat = images[1].stat()
    os.utime(images[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # changed behind the cache's back
    (runs / CACHE_FOLDER / "foreign.jpg").write_bytes(b"not a thumbnail")

    assert prune(runs, keep=2) == (4, 2)
    assert sorted(entry.name for entry in (runs / CACHE_FOLDER).iterdir()) == sorted(
        [shown["new"].name, shown["newer"].name])
    assert prune(runs, keep=2) == (0, 2)


def test_a_limit_below_one_thumbnail_is_refused(tmp_path):
    assert parse_settings(["--workdir", str(tmp_path), "--max-thumbnails", "3"]).max_thumbnails == 3
    with pytest.raises(SettingsError, match="^--max-thumbnails must be at least 1$"):
        parse_settings(["--workdir", str(tmp_path), "--max-thumbnails", "0"])


def _sources(runs: Path) -> list[str]:
    """The image each cached thumbnail was made from (its JPEG comment), by file name."""
    names = []
    for entry in (runs / CACHE_FOLDER).glob("*.jpg"):
        with Image.open(entry) as picture:
            names.append(Path(picture.info["comment"].decode("utf-8")).name)
    return sorted(names)


@pytest.mark.slow  # a server process
def test_a_serving_server_prunes_its_cache_in_bulk_once_new_thumbnails_pass_the_limit(tmp_path):
    folders = dataset_gui_folders(tmp_path)
    shelf = folders.datasets / "shelf" / "1_box"
    shelf.mkdir(parents=True)
    names = [_image(shelf / f"{index:02d}.png", (32, 32), (index * 20, 0, 0)).name for index in range(12)]
    server = GuiServer(folders, options=("--max-thumbnails", "10")).start()
    try:
        with server.client() as client:
            for count, name in enumerate(names[:10], start=1):
                answer = client.get("/api/datasets/0/thumbnail", params={"path": f"shelf/1_box/{name}"})
                assert answer.status_code == 200, answer.text
                assert len(_sources(folders.runs)) == count   # within the limit: nothing pruned
            # the 11th passes the limit: the cache is pruned to a tenth below it, the least recently shown first,
            # and the 12th is counted on from there without another prune
            for name, kept in ((names[10], names[2:11]), (names[11], names[2:12])):
                assert client.get("/api/datasets/0/thumbnail", params={"path": f"shelf/1_box/{name}"}).is_success
                assert _sources(folders.runs) == kept
    finally:
        server.stop()
