"""Each speed option against the same run with it off: channels-last UNet, torch.compile, CPU thread counts.

Every round runs the baseline and each variant in its own process (order alternating between rounds); a
variant's figure is the median over rounds of (its median step / the same round's baseline median step), so
load drifting on a shared machine cancels within a round. The first ``--skip`` steps are warm-up (torch.compile
compiles there) and are reported separately as the start-up cost in wall time.

``python bench/speed_options.py [--size tiny|full] [--steps N] [--rounds R] [--variants NAME ...]``
"""

from __future__ import annotations

import argparse

from common import GIB, RESULTS, ensure_dataset, ensure_model, median, print_table, write_results
from options import run_variant

VARIANTS: dict[str, dict[str, str]] = {
    "baseline": {},
    "channels_last": {"training.channels_last": "true"},
    "torch_compile": {"training.torch_compile": "true"},
    "threads_1": {"training.cpu_threads": "1"},
    "interop_1": {"training.cpu_interop_threads": "1"},
}
PRESETS = {"tiny": {"resolution": 64, "steps": 30, "skip": 3}, "full": {"resolution": 256, "steps": 6, "skip": 2}}
SHARED = {"cache_latents": "true", "cache_text_encoder_outputs": "true", "network_train_unet_only": "true"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--skip", type=int, help="warm-up steps left out of the step median")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=[name for name in VARIANTS if name != "baseline"],
                        default=[name for name in VARIANTS if name != "baseline"])
    args = parser.parse_args()
    for key, value in PRESETS[args.size].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    model = ensure_model(args.size)
    dataset = ensure_dataset(RESULTS / "data" / f"train-{args.resolution}", count=4)
    names = ["baseline", *args.variants]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for index in range(args.rounds):
        for name in names if index % 2 == 0 else list(reversed(names)):
            runs[name].append(run_variant(name, {**SHARED, **VARIANTS[name]}, model, dataset, args.resolution,
                                          args.steps, f"{args.size}-{index}", bench="speed_options",
                                          skip_first=args.skip))
    summary = {}
    for name in names:
        ratios = [run["median_step"] / base["median_step"] for run, base in zip(runs[name], runs["baseline"])]
        summary[name] = {"ratio": median(ratios), "median_step": median([r["median_step"] for r in runs[name]]),
                         "wall": median([r["wall"] for r in runs[name]]),
                         "peak_rss": median([r["peak_rss"] for r in runs[name]])}
    print_table(["variant", "step ratio vs baseline", "s/step", "wall s", "peak RSS GiB"],
                [[name, s["ratio"], s["median_step"], s["wall"], s["peak_rss"] / GIB] for name, s in summary.items()])
    path = write_results(f"speed_options-{args.size}", {"settings": vars(args), "runs": runs, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
