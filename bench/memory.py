"""Peak RSS of a full-size SD1.5 LoRA run with the memory options on, and where in the run the peak falls.

One ``train_network.py`` run (its own process, model load included) with gradient checkpointing, bf16 mixed
precision (frozen weights stored in bf16), latent and text-encoder-output caching, UNet-only LoRA. RSS is sampled
every 0.2 s; the report gives the whole-run peak (``ru_maxrss``), the phase it fell in, the highest RSS during
setup and during the steps, and the anonymous / file-backed split at the peak.

``python bench/memory.py [--size full|tiny] [--resolution 512] [--steps 3] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import shutil

from common import (GIB, RESULTS, ensure_dataset, ensure_model, median, peak_phase, print_table, python,
                    read_events, run_measured, write_results)

MEMORY_OPTIONS = {
    "gradient_checkpointing": "true",
    "mixed_precision": "bf16",
    "cache_latents": "true",
    "cache_text_encoder_outputs": "true",
    "network_train_unet_only": "true",
}


def phase_peaks(timeline: list[dict], events: list[dict]) -> dict[str, float]:
    """Highest sampled RSS (GiB) before the first step starts and while steps run."""
    steps = [event for event in events if event["event"] == "step"]
    first_step = steps[0]["time"] - steps[0]["seconds_per_step"] if steps else float("inf")
    setup = [sample["rss"] for sample in timeline if sample["time"] < first_step]
    training = [sample["rss"] for sample in timeline if sample["time"] >= first_step]
    return {"setup": max(setup, default=0) / GIB, "steps": max(training, default=0) / GIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra or overriding train_network.py options, e.g. gradient_checkpointing=false")
    args = parser.parse_args()
    model = ensure_model(args.size)
    dataset = ensure_dataset(RESULTS / "data" / f"train-{args.resolution}", count=4)
    output = RESULTS / "work" / "memory" / f"{args.size}-{args.resolution}"
    shutil.rmtree(output, ignore_errors=True)
    options = {**MEMORY_OPTIONS, **dict(item.split("=", 1) for item in args.set)}
    flags = {"pretrained_model_name_or_path": model, "train_data_dir": dataset, "output_dir": output,
             "output_name": "bench", "resolution": args.resolution, "train_batch_size": 1, "network_dim": 4,
             "network_alpha": 4, "max_train_steps": args.steps, "seed": 1, "logging.tensorboard": "false", **options}
    command = python("train_network.py", *[item for key, value in flags.items() for item in (f"--{key}", str(value))])
    measured = run_measured(command, f"memory-{args.size}-{args.resolution}")
    events = read_events(output / "progress.jsonl")
    peak = max(measured.timeline, key=lambda sample: sample["rss"], default={"anon": 0, "file": 0})
    seconds = [event["seconds_per_step"] for event in events if event["event"] == "step"][1:]
    report = {"peak_rss": measured.peak_rss, "peak_phase": peak_phase(measured.timeline, events),
              "phase_peaks_gib": phase_peaks(measured.timeline, events), "peak_anon": peak.get("anon", 0),
              "peak_file": peak.get("file", 0), "median_step": median(seconds), "wall": measured.wall}
    print_table(["peak RSS GiB", "phase", "setup max GiB", "steps max GiB", "anon GiB", "file GiB", "s/step"],
                [[measured.peak_rss / GIB, report["peak_phase"], report["phase_peaks_gib"]["setup"],
                  report["phase_peaks_gib"]["steps"], report["peak_anon"] / GIB, report["peak_file"] / GIB,
                  report["median_step"]]])
    name = f"memory-{args.size}-{args.resolution}"
    print(f"wrote {write_results(name, {'settings': {**vars(args), 'options': options}, **report})}")


if __name__ == "__main__":
    main()
