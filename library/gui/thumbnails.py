"""Small JPEG thumbnails of dataset images for the dataset browser, made once and cached under the runs root.

The image is opened the one way every dataset image is (data/images.py), so a file the doctor calls unreadable has no
thumbnail either. A cache entry is named by the image's path and by its size and modification time, and holds the
image's path in its JPEG comment: an edited image gets a new thumbnail and its old one is removed, and `prune` drops
the entries of images gone or changed since and keeps the cache to a limit (`MAX_THUMBNAILS` by default), the least
recently shown going first. The server prunes when it starts and, through `ThumbnailCache`, whenever the thumbnails it
makes take the cache past its limit. Only re-encoded pixels are ever served, never the file itself.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from library.atomic_files import atomic_path
from library.data.images import load_image_rgb

THUMBNAIL_SIDE = 256
MAX_THUMBNAILS = 5000   # about 15 KB each: some 75 MB at most
CACHE_FOLDER = ".thumbnails"   # hidden, so no list of runs or files on the page shows it


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _version(image: Path) -> str:
    """What changes when the image's file does (and when thumbnails are made at another size)."""
    stat = image.stat()
    return _digest(f"{stat.st_size}\0{stat.st_mtime_ns}\0{THUMBNAIL_SIDE}", 12)


def _thumbnail(image: Path, runs_root: Path) -> tuple[Path, int]:
    """The cached thumbnail of ``image``, made if missing, and how many entries that added to the cache (1 for a new
    one, less the replaced thumbnails of the image before it changed)."""
    source = image.resolve()
    cache, stem = runs_root / CACHE_FOLDER, _digest(str(source), 32)
    cached = cache / f"{stem}-{_version(image)}.jpg"
    if cached.is_file():
        os.utime(cached)   # shown now: the last to go when the cache is over its size
        return cached, 0
    picture = load_image_rgb(image)
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    with atomic_path(cached) as temporary:
        picture.save(temporary, format="JPEG", quality=85, comment=str(source).encode("utf-8"))
    added = 1
    for older in cache.glob(f"{stem}-*.jpg"):   # the thumbnails of the image before it changed
        if older != cached:
            older.unlink(missing_ok=True)
            added -= 1
    return cached, added


def _current(entry: Path) -> bool:
    """Whether the entry's image still exists unchanged (an entry that cannot be read is not)."""
    try:
        with Image.open(entry) as picture:
            source = Path(picture.info.get("comment", b"").decode("utf-8"))
        return source.is_absolute() and source.is_file() and entry.stem.endswith(f"-{_version(source)}")
    except (OSError, UnidentifiedImageError, UnicodeDecodeError):
        return False


def prune(runs_root: Path, keep: int = MAX_THUMBNAILS) -> tuple[int, int]:
    """Remove the thumbnails of images gone or changed, then the least recently shown beyond ``keep``; returns how
    many were removed and how many are kept (reads each entry's header only)."""
    cache = runs_root / CACHE_FOLDER
    entries = sorted(cache.glob("*.jpg"), key=lambda entry: entry.stat().st_mtime, reverse=True)
    kept = set([entry for entry in entries if _current(entry)][:keep])
    removed = [entry for entry in entries if entry not in kept]
    for entry in removed:
        entry.unlink(missing_ok=True)
    return len(removed), len(kept)


class ThumbnailCache:
    """One server's thumbnails, kept within ``limit`` while it serves without scanning the cache on each request: it
    counts the entries it adds, and once they pass the limit prunes in bulk to a tenth below it, so a long session
    browsing many datasets scans the cache once per many new thumbnails."""

    def __init__(self, runs_root: Path, limit: int = MAX_THUMBNAILS) -> None:
        self.runs_root, self.limit = runs_root, limit
        self._entries = 0   # set by each prune, counted up from there
        self._counting, self._pruning = threading.Lock(), threading.Lock()

    def thumbnail(self, image: Path) -> Path:
        """The cached thumbnail of ``image`` (at most ``THUMBNAIL_SIDE`` px a side), made if missing; raises
        ImageLoadError for an image that cannot be decoded."""
        cached, added = _thumbnail(image, self.runs_root)
        with self._counting:
            self._entries += added
            over = self._entries > self.limit
        if over:
            self.prune(wait=False)
        return cached

    def prune(self, wait: bool = True) -> int:
        """`prune` to a tenth below the limit and count what is kept; returns how many were removed. Run when the
        server starts, and by a request that takes the cache past its limit (``wait=False``: none if a prune is
        already under way)."""
        if not self._pruning.acquire(blocking=wait):
            return 0
        try:
            removed, kept = prune(self.runs_root, self.limit - self.limit // 10)
            with self._counting:
                self._entries = kept
            return removed
        finally:
            self._pruning.release()
