"""VAE latents computed once per image, kept in memory or in files beside the images.

A cached latent is the *mean* of the VAE's latent distribution, less the family's shift (FLUX.1's VAE has one),
times the scaling factor: deterministic, so a
cache built today equals one built tomorrow, and the same as :func:`encode_latents` gives uncached batches.
(The distribution's spread is tiny next to the training noise, so sampling from it adds nothing worth freezing
into a cache.)

On disk, ``<image folder>/.furnace_cache/<image name>_<resized>_<bucket>.safetensors`` holds the latent (and the
latent of the mirrored image when ``flip_aug`` is on, and the loss mask at latent size for masked subsets: a
mirrored mask is the stored one flipped). Its metadata records what it was made from: the image file's size and
modification time, the resize/crop plan, flip, the mask's source (and its file's size and modification time),
and a fingerprint of the VAE weights, dtype, scaling factor and shift. A file whose record does not match is rebuilt
(a changed mask file included); one that matches is reused without touching the VAE. Files are written
atomically, so runs sharing a dataset may fill its cache at the same time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from library.atomic_files import atomic_path, remove_stale_temporaries
from library.data.records import ImageRecord
from library.data.masks import reduce_mask
from library.data.transforms import Sample, make_sample

logger = logging.getLogger(__name__)

CACHE_DIR_NAME = ".furnace_cache"
_FORMAT = "furnace-latent-v1"
_KEY_FIELD = "furnace_cache_key"
LATENT, FLIPPED, MASK = "latent", "latent_flipped", "mask"


def encode_latents(
    vae: torch.nn.Module, pixels: torch.Tensor, scaling_factor: float, shift_factor: float = 0.0
) -> torch.Tensor:
    """Normalised latent means ``(mean - shift_factor) * scaling_factor`` of ``pixels`` ``[B, 3, H, W]`` in
    [-1, 1] (moved to the VAE's device and dtype)."""
    with torch.no_grad():
        pixels = pixels.to(device=vae.device, dtype=vae.dtype)
        return (vae.encode(pixels).latent_dist.mean - shift_factor) * scaling_factor


def vae_fingerprint(vae: torch.nn.Module, scaling_factor: float, shift_factor: float = 0.0) -> str:
    """Hash of the VAE's config, weights, dtype, scaling factor and shift: any change makes cached latents stale
    (an unshifted family's fingerprint is the one it always had)."""
    digest = hashlib.sha256()
    config = dict(getattr(vae, "config", {}))
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"{vae.dtype}|{scaling_factor!r}".encode())
    if shift_factor:
        digest.update(f"|shift {shift_factor!r}".encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(record: ImageRecord, vae_key: str) -> str:
    """Everything a cached latent depends on, as one string."""
    stat = record.path.stat()
    plan = record.plan
    parts = {
        "format": _FORMAT,
        "image": [stat.st_size, stat.st_mtime_ns],
        "plan": [plan.original, plan.resized, plan.bucket],
        "crop": "centre",
        "flip": record.subset.flip_aug,
        "vae": vae_key,
    }
    if record.subset.masked:  # unmasked entries keep the key they always had
        parts["mask"] = _mask_source(record)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _mask_source(record: ImageRecord) -> list[object]:
    """What a cached mask was made from: its file (path, size, modification time), or the image's alpha."""
    if record.mask_path is None:
        return ["alpha"]
    stat = record.mask_path.stat()
    return [str(record.mask_path), stat.st_size, stat.st_mtime_ns]


def _stored_names(record: ImageRecord) -> set[str]:
    """The tensors a cache entry of ``record`` holds."""
    names = {LATENT}
    if record.subset.flip_aug:
        names.add(FLIPPED)
    if record.subset.masked:
        names.add(MASK)
    return names


def cache_path(record: ImageRecord) -> Path:
    """Where the latent of ``record`` lives on disk (one file per image and size plan)."""
    plan = record.plan
    name = f"{record.path.name}_{plan.resized[0]}x{plan.resized[1]}_{plan.bucket[0]}x{plan.bucket[1]}.safetensors"
    return record.path.parent / CACHE_DIR_NAME / name


EntryId = tuple[Path, object]


def entry_id(record: ImageRecord) -> EntryId:
    """Records of the same file at different sizes (two datasets, two resolutions) are different entries."""
    return (record.path, record.plan)


class LatentCache:
    """Latents by record; files on disk (read when needed) or tensors in memory."""

    def __init__(self, vae_key: str, to_disk: bool) -> None:
        self.vae_key = vae_key
        self.to_disk = to_disk
        self._memory: dict[EntryId, dict[str, torch.Tensor]] = {}
        self._files: dict[EntryId, Path] = {}
        self._disk_failed = False
        self._tidied: set[Path] = set()

    def reuse_from_disk(self, record: ImageRecord) -> bool:
        """Adopt an existing cache file when it was made from exactly this image, plan and VAE."""
        if not self.to_disk:
            return False
        path = cache_path(record)
        try:
            with safe_open(str(path), framework="pt") as handle:
                stored = (handle.metadata() or {}).get(_KEY_FIELD)
                names = set(handle.keys())
        except (OSError, SafetensorError):
            return False
        if stored != cache_key(record, self.vae_key) or not _stored_names(record) <= names:
            return False
        self._files[entry_id(record)] = path
        return True

    def store(self, record: ImageRecord, latents: dict[str, torch.Tensor]) -> None:
        """Keep freshly encoded latents: written beside the image, or in memory if that is off or fails."""
        latents = {name: tensor.detach().to("cpu").contiguous() for name, tensor in latents.items()}
        if self.to_disk and not self._disk_failed:
            path = cache_path(record)
            try:
                self._write(path, latents, cache_key(record, self.vae_key))
                self._files[entry_id(record)] = path
                return
            except OSError as error:
                self._disk_failed = True
                logger.warning("cannot write the latent cache at %s (%s); keeping latents in memory", path, error)
        self._memory[entry_id(record)] = latents

    def _write(self, path: Path, latents: dict[str, torch.Tensor], key: str) -> None:
        folder = path.parent
        if folder not in self._tidied:  # once per cache folder: what killed runs left half-written
            remove_stale_temporaries(folder)
            self._tidied.add(folder)
        with atomic_path(path) as temporary:
            save_file(latents, str(temporary), metadata={_KEY_FIELD: key})

    def get(self, record: ImageRecord, flipped: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent ``[4, h, w]`` of ``record`` and its loss mask ``[1, h, w]`` (None: unmasked), both mirrored
        when ``flipped``."""
        key = entry_id(record)
        latents = self._memory.get(key)
        if latents is None:
            latents = load_file(str(self._files[key]))
        mask = latents.get(MASK)
        if mask is not None and flipped:
            mask = torch.flip(mask, dims=[-1])
        return latents[FLIPPED if flipped else LATENT], mask


def _latent_mask(mask: torch.Tensor | None, size: torch.Size) -> torch.Tensor:
    """A sample's mask area-averaged to the latent grid ``[1, h, w]``; ones for a masked subset's image without one."""
    if mask is None:
        return torch.ones((1, *size))
    return reduce_mask(mask.unsqueeze(0), size)[0]


class LatentEncoder:
    """Collects centred samples per bucket, VAE-encodes them in small batches (and their mirror images for
    ``flip_aug`` subsets) and stores the latents in a :class:`LatentCache`."""

    def __init__(
        self, vae: torch.nn.Module, factor: float, cache: LatentCache, batch_size: int, shift: float = 0.0
    ) -> None:
        self.vae, self.factor, self.cache, self.batch_size = vae, factor, cache, batch_size
        self.shift = shift
        self.pending: dict[tuple, list[tuple[ImageRecord, Sample]]] = defaultdict(list)
        self.encoded = 0

    def add(self, record: ImageRecord, image: Image.Image, mask: Image.Image | None = None) -> None:
        """Queue the centred crop of a decoded image (and of its mask); a full bucket queue is encoded at once."""
        queue = self.pending[record.plan.bucket]
        queue.append((record, make_sample(image, record.plan, mask=mask)))
        if len(queue) >= self.batch_size:
            self._encode(record.plan.bucket)

    def flush(self) -> None:
        """Encode whatever is still queued."""
        for bucket in list(self.pending):
            self._encode(bucket)

    def _encode(self, bucket: tuple) -> None:
        queue = self.pending.pop(bucket, [])
        if not queue:
            return
        pixels = torch.stack([sample.pixels for _, sample in queue])
        latents = encode_latents(self.vae, pixels, self.factor, self.shift)
        flipped = None
        if any(record.subset.flip_aug for record, _ in queue):
            flipped = encode_latents(self.vae, torch.flip(pixels, dims=[-1]), self.factor, self.shift)
        for row, (record, sample) in enumerate(queue):
            entry = {LATENT: latents[row]}
            if record.subset.flip_aug and flipped is not None:
                entry[FLIPPED] = flipped[row]
            if record.subset.masked:
                entry[MASK] = _latent_mask(sample.mask, latents.shape[-2:])
            self.cache.store(record, entry)
        self.encoded += len(queue)
