"""Training sizes fitted to the model family's resolution multiple (FLUX.1: 16 px, for its 2x2 latent packing): an
image set of odd sizes lands in buckets whose sides are all multiples of 16, in the run's data pipeline and in the
doctor's report alike, with bucket steps or a resolution that are only multiples of 8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import image_samples as samples
from pipeline_fixtures import run_config

from library.data.pipeline import build_training_data
from library.models.families import FLUX1_DEV
from preprocess.__main__ import main

DOCTOR_BASE = ["--resolution", "64", "--min-bucket-reso", "64", "--max-bucket-reso", "256"]  # run_config's
ODD_SIZES = [(97, 61), (61, 97), (150, 133), (203, 75), (88, 88), (131, 250)]
SETTINGS = [  # (run's dataset options, the doctor's flags)
    ({"enable_bucket": True, "bucket_reso_steps": 24}, ["--bucket-reso-steps", "24"]),
    ({"enable_bucket": True, "bucket_no_upscale": True, "bucket_reso_steps": 8},
     ["--bucket-reso-steps", "8", "--bucket-no-upscale"]),
    ({"enable_bucket": False, "resolution": 72}, ["--no-buckets", "--resolution", "72"]),
]


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("odd") / "3_odd"
    folder.mkdir()
    for index, size in enumerate(ODD_SIZES):
        samples.shapes_image(size, seed=index).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text("odd", encoding="utf-8")
    return folder.parent


@pytest.mark.parametrize(("dataset", "flags"), SETTINGS, ids=["bucket-steps-24", "no-upscale-steps-8", "no-buckets-72"])
def test_odd_sizes_land_in_flux_sized_buckets_in_the_run_and_the_doctor(odd_images, capsys, dataset, flags):
    data = build_training_data(run_config(train_data_dir=odd_images, **dataset),
                               resolution_multiple=FLUX1_DEV.resolution_multiple)
    buckets = {record.plan.bucket for record in data.train_records}
    assert len(data.train_records) == len(ODD_SIZES)
    assert all(side % 16 == 0 for bucket in buckets for side in bucket), buckets
    assert main(["doctor", str(odd_images), "--json", "--family", "flux1-dev", *DOCTOR_BASE, *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    doctor = {tuple(map(int, name.split("x"))) for name in report["folders"][0]["buckets"]}
    assert doctor == buckets


def test_stable_diffusion_keeps_its_eight_pixel_steps(odd_images):
    data = build_training_data(run_config(train_data_dir=odd_images, enable_bucket=True, bucket_no_upscale=True,
                                          bucket_reso_steps=8), resolution_multiple=8)
    assert any(side % 16 for record in data.train_records for side in record.plan.bucket)
