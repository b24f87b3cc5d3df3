"""Small JPEG thumbnails of dataset images for the dataset browser, made once and cached under the runs root.

The image is opened the one way every dataset image is (data/images.py), so a file the doctor calls unreadable has no
thumbnail either. A cache entry is named by the image's path, size and modification time: an edited image gets a
new thumbnail, and only re-encoded pixels are ever served, never the file itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from library.atomic_files import atomic_path
from library.data.images import load_image_rgb

THUMBNAIL_SIDE = 256
CACHE_FOLDER = ".thumbnails"   # hidden, so no list of runs or files on the page shows it


def thumbnail(image: Path, runs_root: Path) -> Path:
    """The cached thumbnail of ``image`` (at most ``THUMBNAIL_SIDE`` px a side), made if missing; raises
    ImageLoadError for an image that cannot be decoded."""
    stat = image.stat()
    key = hashlib.sha256(f"{image.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{THUMBNAIL_SIDE}".encode())
    cached = runs_root / CACHE_FOLDER / f"{key.hexdigest()[:32]}.jpg"
    if cached.is_file():
        return cached
    picture = load_image_rgb(image)
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    with atomic_path(cached) as temporary:
        picture.save(temporary, format="JPEG", quality=85)
    return cached
