"""The data pipeline at scale: scan + bucket + caption parse of 10,000 generated images, and cache-build speed.

Scan time is ``build_training_data`` (image headers, captions, bucket assignment) plus building one epoch's
batches, median over ``--repeat`` runs in this process. Cache throughput is ``TrainingData.prepare`` with the
latent cache (in memory, then on disk) through the tiny VAE, images per second.

``python bench/data_pipeline.py [--images 10000] [--cache-images 256]``
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time

import torch

from common import RESULTS, ensure_dataset, ensure_model, median, print_table, write_results


def config_for(model, dataset, resolution: int, output, bucket: bool = True):
    from library.config import parse_cli

    return parse_cli(["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(dataset),
                      "--output_dir", str(output), "--resolution", str(resolution),
                      "--enable_bucket", str(bucket).lower(), "--train_batch_size", "4"], program="bench")


def time_scan(config, repeat: int) -> tuple[list[float], int]:
    from library.data.pipeline import build_training_data

    seconds, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        data = build_training_data(config)
        data.epoch_batches(0)
        seconds.append(time.perf_counter() - started)
        count = len(data.train_records)
    return seconds, count


def time_cache(config, model_dir, to_disk: bool) -> tuple[float, int]:
    from library.data.pipeline import build_training_data
    from library.models.loader import load_base_model

    model = load_base_model(model_dir)
    data = build_training_data(config)
    started = time.perf_counter()
    data.prepare(model.vae, "cpu", torch.float32, cache_latents=True, cache_to_disk=to_disk)
    return time.perf_counter() - started, len(data.train_records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--cache-images", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = ensure_model("tiny")
    work = RESULTS / "work" / "data_pipeline"
    started = time.perf_counter()
    big = ensure_dataset(RESULTS / "data" / f"scan-{args.images}", count=args.images)
    generated = time.perf_counter() - started
    scan_seconds, scanned = time_scan(config_for(model, big, 512, work / "scan"), args.repeat)

    small = ensure_dataset(RESULTS / "data" / f"cache-{args.cache_images}", count=args.cache_images)
    rows, cache = [], {}
    for to_disk in (False, True):
        for stale in small.rglob("*.npz"):
            stale.unlink()
        shutil.rmtree(work / "cache", ignore_errors=True)
        seconds, count = time_cache(config_for(model, small, 64, work / "cache", bucket=False), model, to_disk)
        key = "disk" if to_disk else "memory"
        cache[key] = {"seconds": seconds, "images": count, "images_per_second": count / seconds}
        rows.append([f"latent cache ({key}, 64 px, tiny VAE)", count, seconds, count / seconds])
    scan = median(scan_seconds)
    rows.insert(0, [f"scan + bucket + captions ({args.repeat} runs, median)", scanned, scan, scanned / scan])
    print_table(["stage", "images", "seconds", "images/s"], rows)
    payload = {"images": scanned, "scan_seconds": scan_seconds, "scan_median": scan, "cache": cache,
               "dataset_generation_seconds": generated}
    print(f"wrote {write_results('data_pipeline', payload)}")


if __name__ == "__main__":
    main()
