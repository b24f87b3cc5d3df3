"""Aspect-ratio buckets: the bucket list, bucket choice, no-upscale, and the resize/crop plan."""

from __future__ import annotations

import random

import pytest

from library.data.buckets import BucketAssigner, BucketParams, bucket_table, cover_size, make_buckets


def test_bucket_list_properties() -> None:
    buckets = make_buckets((512, 512), min_reso=256, max_reso=1024, steps=64)
    assert (512, 512) in buckets
    assert buckets == sorted(set(buckets))
    for width, height in buckets:
        assert width % 64 == 0 and height % 64 == 0
        assert 256 <= width <= 1024 and 256 <= height <= 1024
        assert width * height <= 512 * 512
        assert (height, width) in buckets
    widths = {width for width, _ in buckets}
    assert widths == set(range(256, 1025, 64))
    for width in widths:
        # The tallest bucket of each width is as tall as the area allows (or hits max_reso).
        tallest = max(height for w, height in buckets if w == width)
        assert tallest == 1024 or width * (tallest + 64) > 512 * 512


def test_rectangular_resolution_area() -> None:
    buckets = make_buckets((768, 512), min_reso=320, max_reso=1280, steps=32)
    assert all(w * h <= 768 * 512 and w % 32 == 0 and h % 32 == 0 for w, h in buckets)
    assert min(min(b) for b in buckets) >= 320


@pytest.mark.parametrize("size", [(1000, 1000), (1600, 800), (800, 1600), (1200, 700), (333, 999)])
def test_closest_aspect_bucket_and_cover_plan(size: tuple[int, int]) -> None:
    assigner = BucketAssigner(BucketParams())
    plan = assigner.plan(size)
    ratio = size[0] / size[1]
    best = min(abs(w / h - ratio) for w, h in assigner.buckets)
    assert abs(plan.bucket[0] / plan.bucket[1] - ratio) == pytest.approx(best)
    # Resized covers the bucket exactly in one direction, keeping the aspect ratio.
    assert plan.resized[0] >= plan.bucket[0] and plan.resized[1] >= plan.bucket[1]
    assert plan.resized[0] == plan.bucket[0] or plan.resized[1] == plan.bucket[1]
    assert plan.resized[0] / plan.resized[1] == pytest.approx(ratio, rel=0.01)


def test_square_and_two_to_one() -> None:
    assigner = BucketAssigner(BucketParams())
    assert assigner.plan((300, 300)).bucket == (512, 512)
    assert assigner.plan((300, 300)).resized == (512, 512)
    # 2:1 sits between 704x320 (2.2) and 640x384 (1.67): 2.2 is closer.
    assert assigner.plan((2000, 1000)).bucket == (704, 320)


def test_crop_offsets_centre_and_random() -> None:
    plan = BucketAssigner(BucketParams()).plan((1000, 500))
    spare = (plan.resized[0] - plan.bucket[0], plan.resized[1] - plan.bucket[1])
    assert plan.crop_offset() == (spare[0] // 2, spare[1] // 2)
    offsets = {plan.crop_offset(random_crop=True, rng=random.Random(seed)) for seed in range(20)}
    assert all(0 <= x <= spare[0] and 0 <= y <= spare[1] for x, y in offsets)
    assert len(offsets) > 1
    assert plan.crop_offset(True, random.Random(3)) == plan.crop_offset(True, random.Random(3))


def test_no_upscale_small_image_keeps_own_size() -> None:
    plan = BucketAssigner(BucketParams(no_upscale=True)).plan((300, 200))
    assert plan.bucket == (256, 192)
    assert plan.resized == (300, 200)


def test_no_upscale_large_image_shrinks_to_area() -> None:
    params = BucketParams(no_upscale=True)
    plan = BucketAssigner(params).plan((2000, 1000))
    width, height = plan.bucket
    assert width % 64 == 0 and height % 64 == 0
    assert width * height <= params.max_area
    assert plan.resized[0] >= width and plan.resized[1] >= height
    assert plan.resized[0] * plan.resized[1] < 2000 * 1000
    assert width / height == pytest.approx(2.0, rel=0.15)


def test_disabled_buckets_use_resolution() -> None:
    plan = BucketAssigner(BucketParams(resolution=(512, 768), enabled=False)).plan((1000, 1000))
    assert plan.bucket == (512, 768)
    assert plan.resized == (768, 768)


def test_bucket_table_counts() -> None:
    table = bucket_table([(1000, 1000), (500, 500), (2000, 1000), (1000, 2000)], BucketParams())
    assert table == {(320, 704): 1, (512, 512): 2, (704, 320): 1}


def test_cover_size() -> None:
    assert cover_size((100, 50), (64, 64)) == (128, 64)
    assert cover_size((1024, 768), (512, 512)) == (683, 512)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"min_reso": 1024, "max_reso": 512},
        {"resolution": (2048, 2048)},
        {"resolution": (32, 32), "min_reso": 64, "max_reso": 64},
    ],
)
def test_invalid_params_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BucketParams(**kwargs)
