"""What the memory/speed options cost or save: seconds per step and whole-run peak RSS, each on and off.

Each variant is one ``train_network.py`` run in its own process (same data, seed, steps); ``--rounds`` repeats
the whole set in alternating order and medians are reported. Text-encoder caching needs a UNet-only LoRA, so it is
compared against the UNet-only run without it.

``python bench/options.py [--size tiny|full] [--steps N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import shutil

from common import (GIB, RESULTS, ensure_dataset, ensure_model, median, print_table, python, read_events,
                    run_measured, step_seconds, write_results)

VARIANTS: dict[str, dict[str, str]] = {
    "baseline": {},
    "cache_latents": {"cache_latents": "true"},
    "gradient_checkpointing": {"gradient_checkpointing": "true"},
    "unet_only": {"network_train_unet_only": "true"},
    "unet_only+cache_text_encoder_outputs": {"network_train_unet_only": "true",
                                             "cache_text_encoder_outputs": "true"},
}
RESOLUTION = {"tiny": 64, "full": 256}


def run_variant(name: str, options: dict[str, str], model, dataset, resolution: int, steps: int, tag: str,
                bench: str = "options", skip_first: int = 1) -> dict:
    """One ``train_network.py`` run with ``options`` on top of the shared settings: median step (after
    ``skip_first`` warm-up steps), wall time and peak RSS."""
    output = RESULTS / "work" / bench / f"{name}-{tag}"
    shutil.rmtree(output, ignore_errors=True)
    flags = {"pretrained_model_name_or_path": model, "train_data_dir": dataset, "output_dir": output,
             "output_name": "bench", "resolution": resolution, "train_batch_size": 1, "network_dim": 4,
             "network_alpha": 4, "max_train_steps": steps, "seed": 1, "logging.tensorboard": "false",
             **options}
    command = python("train_network.py", *[item for key, value in flags.items() for item in (f"--{key}", str(value))])
    measured = run_measured(command, f"{bench}-{name}-{tag}")
    steps = step_seconds(read_events(output / "progress.jsonl"), skip_first)
    return {"median_step": median(steps), "wall": measured.wall, "peak_rss": measured.peak_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(RESOLUTION), default="tiny")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    model = ensure_model(args.size)
    dataset = ensure_dataset(RESULTS / "data" / "options", count=8)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for index in range(args.rounds):
        names = list(VARIANTS) if index % 2 == 0 else list(reversed(VARIANTS))
        for name in names:
            runs[name].append(run_variant(name, VARIANTS[name], model, dataset, RESOLUTION[args.size], args.steps,
                                          f"{args.size}-{index}"))
    summary = {name: {key: median([run[key] for run in results]) for key in ("median_step", "wall", "peak_rss")}
               for name, results in runs.items()}
    print_table(["variant", "s/step", "peak RSS GiB", "wall s"],
                [[name, s["median_step"], s["peak_rss"] / GIB, s["wall"]] for name, s in summary.items()])
    print(f"wrote {write_results(f'options-{args.size}', {'settings': vars(args), 'runs': runs, 'summary': summary})}")


if __name__ == "__main__":
    main()
