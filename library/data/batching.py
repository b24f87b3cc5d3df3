"""Which images train together: repeats, regularization balance, bucket-pure batches, epoch order, sharding.

Everything is a pure function of its inputs and a seed, so an epoch's batches are the same on every run and in
every process; resuming mid-epoch finds the same order.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from library.data.buckets import Size


def seeded_rng(*parts: object) -> random.Random:
    """A private RNG for ``parts`` (e.g. seed, epoch, batch number): string seeds hash the same in every process."""
    return random.Random(":".join(str(part) for part in parts))


def balanced_reg_repeats(train_samples: int, reg_repeats: Sequence[int]) -> list[int]:
    """Repeats of each regularization image so they add up to the training samples per epoch.

    sd-scripts balances DreamBooth prior images this way: images are taken in order with their folder's repeats
    until the training count is reached; if they do not reach it, further passes add one repeat each. Images not
    reached get 0. The prior loss then weighs as much as the instance loss, whatever the folder sizes.
    """
    result = [0] * len(reg_repeats)
    if not reg_repeats or train_samples <= 0:
        return result
    total = 0
    for index, repeats in enumerate(reg_repeats):
        result[index] = repeats
        total += repeats
        if total >= train_samples:
            return result
    while total < train_samples:
        for index in range(len(result)):
            result[index] += 1
            total += 1
            if total >= train_samples:
                break
    return result


def epoch_order(
    groups: Sequence[tuple[int, Size]], repeats: Sequence[int], batch_sizes: Sequence[int], seed: int, epoch: int
) -> list[list[int]]:
    """All batches of one epoch (every process), shuffled.

    Sample ``i`` belongs to group ``groups[i]`` = (dataset index, bucket) and appears ``repeats[i]`` times. Each
    group is shuffled and cut into batches of its dataset's ``batch_sizes``; then the batches of all groups are
    shuffled together. Batches never mix groups, so one batch has one image size.
    """
    rng = seeded_rng(seed, epoch, "order")
    members: dict[tuple[int, Size], list[int]] = defaultdict(list)
    for index, (group, count) in enumerate(zip(groups, repeats)):
        members[group].extend([index] * count)
    batches: list[list[int]] = []
    for group in sorted(members):
        samples = members[group]
        rng.shuffle(samples)
        size = batch_sizes[group[0]]
        batches += [samples[start : start + size] for start in range(0, len(samples), size)]
    rng.shuffle(batches)
    return batches


def count_batches(groups: Sequence[tuple[int, Size]], repeats: Sequence[int], batch_sizes: Sequence[int]) -> int:
    """How many batches :func:`epoch_order` makes, without building them."""
    samples: dict[tuple[int, Size], int] = defaultdict(int)
    for group, count in zip(groups, repeats):
        samples[group] += count
    return sum(math.ceil(count / batch_sizes[group[0]]) for group, count in samples.items())


def shard(batches: list[list[int]], process_index: int, num_processes: int) -> list[list[int]]:
    """This process's batches: every ``num_processes``-th one.

    Every process must step the same number of times, so when the count does not divide evenly the first
    batches are reused to fill the last round (as accelerate's even batches do); otherwise every batch is used
    exactly once across processes.
    """
    if num_processes <= 1 or not batches:
        return list(batches)
    total = batches_per_process(len(batches), num_processes) * num_processes
    padded = [batches[i % len(batches)] for i in range(total)]
    return padded[process_index::num_processes]


def batches_per_process(total_batches: int, num_processes: int) -> int:
    return math.ceil(total_batches / max(1, num_processes))


def validation_holdout(candidates: Sequence[int], fraction: float, seed: int) -> set[int]:
    """A seeded ``fraction`` of ``candidates`` (at least one when the fraction is > 0) held out for validation."""
    if fraction <= 0 or not candidates:
        return set()
    count = max(1, round(len(candidates) * fraction))
    return set(seeded_rng(seed, "validation").sample(list(candidates), count))
