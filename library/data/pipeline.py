"""The training data a run sees: records, epochs of bucket-pure batches, and the tensors of each batch.

``build_training_data`` resolves the config's datasets and scans them (headers only, cheap). ``prepare`` then
decodes every image once, before the first step, so an unreadable file stops the run (or is skipped, per
``dataset.on_bad_image``) up front and never mid-epoch; when latents are cached it encodes them in the same pass.

Epoch order depends only on (``training.seed``, epoch) and a batch's randomness (caption shuffle/dropout, flip,
random crop, colour jitter) only on (``training.seed``, epoch, batch number), never on a global RNG: a run resumed
in the middle of an epoch sees exactly the batches the uninterrupted run saw. Epochs count from 0.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from library.config.errors import ConfigError
from library.config.schema import FurnaceConfig
from library.data import batching, summary
from library.data.buckets import BucketAssigner, BucketParams
from library.data.caption_process import process_caption
from library.data.caption_templates import pick_template, training_templates
from library.data.dataset_config import (
    DatasetBlueprint,
    SubsetBlueprint,
    blueprints_from_config,
    validation_subsets,
    with_dreambooth_subsets,
)
from library.data.images import ImageLoadError
from library.data.latent_cache import LatentCache, LatentEncoder, vae_fingerprint
from library.data.masks import MaskError, load_image_and_mask
from library.data.records import DatasetError, ImageRecord, handle_bad_images, scan_subsets
from library.data.transforms import make_sample, size_conditioning

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """One step's inputs. Exactly one of ``latents`` ``[B, 4, h, w]`` (cached) or ``pixels`` ``[B, 3, H, W]`` in
    [-1, 1] is set. Sizes are (height, width) pixel pairs: SDXL's time ids. ``masks`` ``[B, 1, h or H, w or W]``
    in [0, 1] (at the latents' or the pixels' size) weigh the loss when any sample of the batch has a mask;
    a sample without one weighs 1 everywhere."""

    indices: list[int]
    captions: list[str]
    loss_weights: torch.Tensor
    is_reg: list[bool]
    original_sizes: list[tuple[int, int]]
    crop_top_lefts: list[tuple[int, int]]
    target_sizes: list[tuple[int, int]]
    latents: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.indices)


def bucket_params(dataset: DatasetBlueprint, resolution_multiple: int = 1) -> BucketParams:
    """The bucket settings of one dataset for a model whose image sides are multiples of ``resolution_multiple``."""
    return BucketParams(
        resolution=dataset.resolution,
        enabled=dataset.enable_bucket,
        min_reso=dataset.min_bucket_reso,
        max_reso=dataset.max_bucket_reso,
        steps=dataset.bucket_reso_steps,
        no_upscale=dataset.bucket_no_upscale,
        multiple=resolution_multiple,
    )


class TrainingData:
    """Training and validation records of a run, and how they become batches (see module docstring)."""

    def __init__(
        self,
        config: FurnaceConfig,
        datasets: list[DatasetBlueprint],
        train_records: list[ImageRecord],
        validation_records: list[ImageRecord],
        process_index: int = 0,
        num_processes: int = 1,
        unreadable: dict[SubsetBlueprint, list[ImageLoadError]] | None = None,
        passed_over: dict[SubsetBlueprint, list[tuple[Path, str]]] | None = None,
        resolution_multiple: int = 1,
    ) -> None:
        self.config = config
        self.datasets = datasets
        self.bucket_params = [bucket_params(dataset, resolution_multiple) for dataset in datasets]
        self.train_records = train_records
        self.validation_records = validation_records
        self.unreadable = unreadable or {}  # images whose header failed to read, kept when on_bad_image = skip
        self.passed_over = passed_over or {}  # entries of the image folders that are not images, with the reason
        self.process_index = process_index
        self.num_processes = num_processes
        self.seed = config.training.seed
        self.templates = training_templates(config.textual_inversion)
        self.repeats = self._sample_repeats()
        self._latents: LatentCache | None = None
        self._validation: list[Batch] | None = None

    def _sample_repeats(self) -> list[int]:
        """Times each training record is seen per epoch: its folder's repeats; reg images balanced per dataset."""
        repeats = [record.subset.num_repeats for record in self.train_records]
        for index in range(len(self.datasets)):
            members = [i for i, record in enumerate(self.train_records) if record.dataset_index == index]
            reg = [i for i in members if self.train_records[i].is_reg]
            if not reg:
                continue
            train_samples = sum(repeats[i] for i in members if not self.train_records[i].is_reg)
            balanced = batching.balanced_reg_repeats(train_samples, [repeats[i] for i in reg])
            for i, count in zip(reg, balanced):
                repeats[i] = count
        return repeats

    @property
    def samples_per_epoch(self) -> int:
        return sum(self.repeats)

    def _groups(self) -> tuple[list[tuple[int, tuple[int, int]]], list[int]]:
        """Each record's batch group (dataset, bucket), and each dataset's batch size."""
        groups = [(record.dataset_index, record.plan.bucket) for record in self.train_records]
        return groups, [dataset.batch_size for dataset in self.datasets]

    def _all_batches(self, epoch: int) -> list[list[int]]:
        groups, sizes = self._groups()
        return batching.epoch_order(groups, self.repeats, sizes, self.seed, epoch)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch in each process (final once ``prepare`` has run: skipped images change it)."""
        groups, sizes = self._groups()
        return batching.batches_per_process(batching.count_batches(groups, self.repeats, sizes), self.num_processes)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of ``epoch``, as indices into ``train_records``."""
        return batching.shard(self._all_batches(epoch), self.process_index, self.num_processes)

    def load_batch(self, indices: list[int], epoch: int, batch_number: int) -> Batch:
        """The tensors of one training batch; the same arguments always give the same batch."""
        rng = batching.seeded_rng(self.seed, epoch, batch_number, "batch")
        captions, weights, pixels, latents, sizes, masks = [], [], [], [], [], []
        prior_weight = self.config.dataset.prior_loss_weight
        for index in indices:
            record = self.train_records[index]
            subset = record.subset
            captions.append(self._caption(record, rng, epoch))
            weights.append(prior_weight if record.is_reg else 1.0)
            flip = subset.flip_aug and rng.random() < 0.5
            if self._latents is not None:
                latent, mask = self._latents.get(record, flip)
                latents.append(latent)
                masks.append(mask)
                sizes.append(size_conditioning(record.plan, record.plan.crop_offset(), flip))
                continue
            image, mask = self._decode(record)
            sample = make_sample(image, record.plan, rng, subset.random_crop, flip, subset.color_aug, mask)
            pixels.append(sample.pixels)
            masks.append(sample.mask)
            sizes.append((sample.original_size, sample.crop_top_left, sample.target_size))
        return _assemble(indices, captions, weights, sizes, latents, pixels, self._reg_flags(indices), masks)

    def _caption(self, record: ImageRecord, rng: random.Random | None = None, epoch: int = 0) -> str:
        """The record's processed caption, or a textual-inversion template in its place."""
        if self.templates:
            return pick_template(self.templates, rng)
        return process_caption(record.caption, record.subset, rng, epoch)

    def _reg_flags(self, indices: list[int]) -> list[bool]:
        return [self.train_records[index].is_reg for index in indices]

    def validation_batches(self) -> list[Batch]:
        """Fixed validation batches: plain captions, no flips, centred crops; built once and reused."""
        if self._validation is None:
            self._validation = [self._fixed_batch(chunk) for chunk in self._validation_chunks()]
        return self._validation

    def _validation_chunks(self) -> list[list[int]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, record in enumerate(self.validation_records):
            groups[(record.dataset_index, record.plan.bucket)].append(index)
        chunks = []
        for key in sorted(groups):
            members, size = groups[key], self.datasets[key[0]].batch_size
            chunks += [members[start : start + size] for start in range(0, len(members), size)]
        return chunks

    def _fixed_batch(self, indices: list[int]) -> Batch:
        captions, sizes, latents, pixels, masks = [], [], [], [], []
        for index in indices:
            record = self.validation_records[index]
            captions.append(self._caption(record))
            if self._latents is not None:
                latent, mask = self._latents.get(record)
                latents.append(latent)
                masks.append(mask)
                sizes.append(size_conditioning(record.plan, record.plan.crop_offset(), False))
                continue
            image, mask = self._decode(record)
            sample = make_sample(image, record.plan, mask=mask)
            pixels.append(sample.pixels)
            masks.append(sample.mask)
            sizes.append((sample.original_size, sample.crop_top_left, sample.target_size))
        count = len(indices)
        return _assemble(indices, captions, [1.0] * count, sizes, latents, pixels, [False] * count, masks)

    def all_captions(self) -> list[str]:
        """Every caption training and validation can produce when captions are not randomised (text cache)."""
        captions = {self._caption(record) for record in self.train_records + self.validation_records}
        if any(record.subset.caption_dropout_every_n_epochs for record in self.train_records):
            captions.add("")
        return sorted(captions)

    @staticmethod
    def _decode(record: ImageRecord) -> tuple[Image.Image, Image.Image | None]:
        try:
            return _load_with_mask(record)
        except ImageLoadError as error:
            raise DatasetError([f"{error} (it changed after the dataset was checked; restart the run)"]) from None

    def prepare(
        self,
        vae: torch.nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        cache_latents: bool = False,
        cache_to_disk: bool = False,
        scaling_factor: float | None = None,
        vae_batch_size: int = 4,
        shift_factor: float = 0.0,
    ) -> None:
        """Decode every image once (bad ones: error or skip per ``dataset.on_bad_image``); with ``cache_latents``
        encode them with ``vae`` (moved to ``device``/``dtype``), reusing valid disk cache files. Latents are
        ``(mean - shift_factor) * scaling_factor`` (default: the VAE config's scaling factor, no shift)."""
        cache, encoder = None, None
        if cache_latents or cache_to_disk:
            if vae is None:
                raise ValueError("prepare(cache_latents=True) needs the VAE")
            if device is not None or dtype is not None:
                vae.to(device=device, dtype=dtype)
            factor = scaling_factor if scaling_factor is not None else float(vae.config.scaling_factor)
            cache = LatentCache(vae_fingerprint(vae, factor, shift_factor), to_disk=cache_to_disk)
            encoder = LatentEncoder(vae, factor, cache, vae_batch_size, shift_factor)
        bad = self._decode_all(cache, encoder)
        handle_bad_images(bad, self.config.dataset.on_bad_image)
        if bad:
            self._drop({error.path for error in bad})
        self._latents = cache
        self._validation = None

    def _decode_all(self, cache: LatentCache | None, encoder: LatentEncoder | None) -> list[ImageLoadError]:
        """Decode every record not already in a valid disk cache, re-planning any whose header lied about its
        size, and feed the encoder; returns the images that failed to decode."""
        bad: list[ImageLoadError] = []
        jobs = [(kind, i) for kind in ("train", "validation") for i in range(len(self._records(kind)))]
        jobs.sort(key=lambda job: self._records(job[0])[job[1]].plan.bucket)
        reused = 0
        description = "checking images" if cache is None else "caching latents"
        for kind, index in tqdm(jobs, desc=description, unit="img", disable=None):
            record = self._records(kind)[index]
            if cache is not None and cache.reuse_from_disk(record):
                reused += 1
                continue
            try:
                image, mask = _load_with_mask(record)
            except ImageLoadError as error:
                bad.append(error)
                continue
            if image.size != record.size:
                plan = BucketAssigner(self.bucket_params[record.dataset_index]).plan(image.size)
                record = replace(record, size=image.size, plan=plan)
                self._records(kind)[index] = record
            if encoder is not None:
                encoder.add(record, image, mask)
        if encoder is not None:
            encoder.flush()
            logger.info("latents: %d reused from the disk cache, %d encoded", reused, encoder.encoded)
        return bad

    def _records(self, kind: str) -> list[ImageRecord]:
        return self.train_records if kind == "train" else self.validation_records

    def _drop(self, paths: set[Path]) -> None:
        self.train_records = [record for record in self.train_records if record.path not in paths]
        self.validation_records = [record for record in self.validation_records if record.path not in paths]
        _require_training_images(self.datasets, self.train_records)
        self.repeats = self._sample_repeats()

    @property
    def has_validation(self) -> bool:
        return bool(self.validation_records)

    @property
    def subsets(self) -> list[SubsetBlueprint]:
        """Every subset of every dataset, in order."""
        return [subset for dataset in self.datasets for subset in dataset.subsets]

    @property
    def num_train_images(self) -> int:
        """Training images times repeats (sd-scripts' ``ss_num_train_images``)."""
        return summary.image_count(self.train_records, reg=False)

    @property
    def num_reg_images(self) -> int:
        """Regularization images times their folder's repeats, before balancing (``ss_num_reg_images``)."""
        return summary.image_count(self.train_records, reg=True)

    @property
    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """``{folder name: {"n_repeats", "img_count"}}`` of the training folders."""
        return summary.dataset_dirs(self.subsets, self.train_records, reg=False)

    @property
    def reg_dataset_dirs(self) -> dict[str, dict[str, int]]:
        """The same of the regularization folders."""
        return summary.dataset_dirs(self.subsets, self.train_records, reg=True)

    @property
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        return summary.tag_frequency(self.subsets, self.train_records)

    @property
    def bucket_info(self) -> dict[str, object]:
        return summary.bucket_info(self.train_records, self.repeats)

    def summary_lines(self) -> list[str]:
        """The doctor's folder table, buckets and tags of every dataset, and the totals, for the start of a run."""
        reports = summary.folder_reports(
            self.datasets, self.train_records, self.repeats, self.validation_records, self.unreadable,
            self.passed_over,
        )
        return summary.summary_lines(
            self.datasets,
            self.bucket_params,
            reports,
            validation_images=len(self.validation_records),
            samples_per_epoch=self.samples_per_epoch,
            batches_per_epoch=self.steps_per_epoch,
            num_processes=self.num_processes,
        )


SizeTriple = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _load_with_mask(record: ImageRecord) -> tuple[Image.Image, Image.Image | None]:
    """The record's RGB image and its loss mask (None: none); a bad mask file stops the run naming it."""
    subset = record.subset
    try:
        return load_image_and_mask(record.path, subset.alpha_mask, record.mask_path)
    except MaskError as error:
        raise DatasetError([str(error)]) from None


def _stack_masks(masks: list[torch.Tensor | None], samples: list[torch.Tensor]) -> torch.Tensor | None:
    """``[B, 1, h, w]`` masks at the samples' size, ones for a sample without one; None when no sample has one."""
    if all(mask is None for mask in masks):
        return None
    return torch.stack(
        [mask if mask is not None else torch.ones((1, *sample.shape[-2:])) for mask, sample in zip(masks, samples)]
    )


def _assemble(
    indices: list[int],
    captions: list[str],
    weights: list[float],
    sizes: list[SizeTriple],
    latents: list[torch.Tensor],
    pixels: list[torch.Tensor],
    is_reg: list[bool],
    masks: list[torch.Tensor | None],
) -> Batch:
    """A :class:`Batch` from per-sample parts; ``sizes`` are (original, crop top-left, target) triples."""
    return Batch(
        indices=list(indices),
        captions=captions,
        loss_weights=torch.tensor(weights, dtype=torch.float32),
        is_reg=is_reg,
        original_sizes=[size[0] for size in sizes],
        crop_top_lefts=[size[1] for size in sizes],
        target_sizes=[size[2] for size in sizes],
        latents=torch.stack(latents) if latents else None,
        pixels=torch.stack(pixels) if pixels else None,
        masks=_stack_masks(masks, latents or pixels),
    )


def _check_settings(
    config: FurnaceConfig, datasets: list[DatasetBlueprint], resolution_multiple: int
) -> list[BucketAssigner]:
    """Per-subset options the run-level checks cannot see (dataset TOMLs set them per subset)."""
    problems, assigners = [], []
    for index, dataset in enumerate(datasets):
        try:
            assigners.append(BucketAssigner(bucket_params(dataset, resolution_multiple)))
            _log_adjusted_sizes(index, assigners[-1].params)
        except ValueError as error:
            problems.append(f"dataset {index} ({dataset.subsets[0].image_dir}): bucket settings: {error}")
        for subset in dataset.subsets:
            if config.dataset.cache_latents and (subset.random_crop or subset.color_aug):
                problems.append(
                    f"{subset.image_dir}: random_crop / color_aug cannot be combined with dataset.cache_latents "
                    "(cached latents are fixed); turn one of them off"
                )
            if config.dataset.cache_text_encoder_outputs and subset.randomises_captions:
                problems.append(
                    f"{subset.image_dir}: shuffle_caption / caption dropout cannot be combined with "
                    "dataset.cache_text_encoder_outputs (cached captions are fixed); turn one of them off"
                )
    if problems:
        raise ConfigError(problems)
    return assigners


def _log_adjusted_sizes(index: int, params: BucketParams) -> None:
    """Say when the model's resolution multiple changed the configured sizes (their table follows at start)."""
    if params.enabled and params.grid != params.steps:
        logger.info("dataset %d: bucket sides in steps of %d px (bucket_reso_steps %d rounded up to the model's "
                    "multiple of %d)", index, params.grid, params.steps, params.multiple)
    if not params.enabled and params.fixed_size != params.resolution:
        logger.info("dataset %d: training size %dx%d (resolution %dx%d floored to the model's multiple of %d)",
                    index, *params.fixed_size, *params.resolution, params.multiple)


def _require_training_images(datasets: list[DatasetBlueprint], records: list[ImageRecord]) -> None:
    for index, dataset in enumerate(datasets):
        if not any(record.dataset_index == index and not record.is_reg for record in records):
            folders = ", ".join(str(subset.image_dir) for subset in dataset.subsets if not subset.is_reg) or "none"
            raise DatasetError([f"dataset {index}: no usable training images (training folders: {folders})"])


def build_training_data(
    config: FurnaceConfig, process_index: int = 0, num_processes: int = 1, resolution_multiple: int = 1
) -> TrainingData:
    """Resolve and scan the run's datasets (image headers and captions only; ``prepare`` decodes) into training
    sizes whose sides are multiples of ``resolution_multiple`` (the model family's)."""
    datasets = with_dreambooth_subsets(blueprints_from_config(config.dataset), config.dreambooth)
    assigners = _check_settings(config, datasets, resolution_multiple)
    on_bad = config.dataset.on_bad_image
    pairs = [(subset, index) for index, dataset in enumerate(datasets) for subset in dataset.subsets]
    scans = scan_subsets(pairs, assigners, on_bad)
    records = [record for scan in scans for record in scan.records]
    unreadable = {scan.subset: scan.bad_images for scan in scans if scan.bad_images}
    passed_over = {scan.subset: scan.passed_over for scan in scans if scan.passed_over}
    validation: list[ImageRecord] = []
    held_out_dirs = validation_subsets(config.dataset)
    if held_out_dirs:
        scans = scan_subsets([(subset, 0) for subset in held_out_dirs], assigners, on_bad)
        validation = [record for scan in scans for record in scan.records]
    elif config.dataset.validation_split:
        candidates = [index for index, record in enumerate(records) if not record.is_reg]
        if len(candidates) < 2:
            raise DatasetError(["dataset.validation_split: needs at least 2 training images to hold some out"])
        held = batching.validation_holdout(candidates, config.dataset.validation_split, config.training.seed)
        validation = [records[index] for index in sorted(held)]
        records = [record for index, record in enumerate(records) if index not in held]
    _require_training_images(datasets, records)
    return TrainingData(
        config, datasets, records, validation, process_index, num_processes, unreadable, passed_over,
        resolution_multiple,
    )
