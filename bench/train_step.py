"""Our training loop against a minimal raw loop: seconds per step and peak RSS, interleaved.

Both train a denoiser LoRA with AdamW at the same batch, resolution, rank, learning rate and seed, with latents and
text embeddings computed once: a UNet against ``raw_loop.py`` (SD1), or FLUX.1-dev's transformer against
``raw_flux_loop.py`` (diffusers' FLUX.1 example step: packed latents, ids, guidance, velocity target; ours is run
with the same raw prediction and guidance 1.0). Each round runs both (order alternating); the ratio of the two median step times
is taken per round and the median over rounds reported. Peak RSS covers each whole process, model load included.
Fixed cost is a run's wall time minus its step times; ours is split into start-up (interpreter, imports,
accelerator), the trainer's set-up phases (from its ``start`` event) and what follows the last step (final save,
exit), and set against the time of the run's steps.

``python bench/train_step.py --size tiny`` (seconds) or ``--size full`` (full-size SD1.5 UNet, random weights,
256 px: seconds per step on a CPU, and gigabytes of memory); ``--family flux1-dev`` for FLUX.1 (``--size full``
builds a full-size FLUX.1-dev: tens of gigabytes).
"""

from __future__ import annotations

import argparse
import json
import shutil

from common import (GIB, RESULTS, ensure_dataset, ensure_model, median, peak_phase, print_table, python,
                    read_events, run_measured, step_seconds, write_results)

PRESETS = {"tiny": {"resolution": 64, "steps": 30}, "full": {"resolution": 256, "steps": 10}}
# per family: the raw loop, and our options that make the same step (diffusers' FLUX.1 example predicts raw)
RAW_LOOPS = {"sd1": "bench/raw_loop.py", "flux1-dev": "bench/raw_flux_loop.py"}
OUR_OPTIONS = {"sd1": [], "flux1-dev": ["--timestep_sampling", "sigma", "--model_prediction_type", "raw",
                                        "--guidance_scale", "1.0"]}


def ours(model, dataset, work, args, tag: str) -> dict:
    output = work / f"ours-{tag}"
    shutil.rmtree(output, ignore_errors=True)
    command = python(
        "train_network.py", "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(dataset),
        "--output_dir", str(output), "--output_name", "bench", "--resolution", str(args.resolution),
        "--train_batch_size", str(args.batch), "--network_dim", "4", "--network_alpha", "4",
        "--network_train_unet_only", "true", "--cache_latents", "true", "--cache_text_encoder_outputs", "true",
        "--learning_rate", "1e-4", "--max_train_steps", str(args.steps), "--seed", "1",
        "--logging.tensorboard", "false", *OUR_OPTIONS[args.family],
    )
    measured = run_measured(command, f"train_step-ours-{tag}")
    events = read_events(output / "progress.jsonl")
    steps = step_seconds(events)
    return {"median_step": median(steps), "wall": measured.wall, "peak_rss": measured.peak_rss,
            "peak_phase": peak_phase(measured.timeline, events), "fixed": fixed_costs(measured, events)}


def fixed_costs(measured, events: list[dict]) -> dict[str, float]:
    """Seconds of ``measured`` outside the steps: start-up, each set-up phase, after the last step, and total."""
    start = next(event for event in events if event["event"] == "start")
    steps = [event for event in events if event["event"] == "step"]
    setup = start["setup_seconds"]
    costs = {"start-up": start["time"] - measured.started_at - sum(setup.values()), **setup,
             "after last step": measured.started_at + measured.wall - steps[-1]["time"]}
    costs["total"] = measured.wall - sum(event["seconds_per_step"] for event in steps)
    return costs


def raw(model, dataset, work, args, tag: str) -> dict:
    report = work / f"raw-{tag}.json"
    command = python(RAW_LOOPS[args.family], str(model), str(dataset), str(report), "--steps", str(args.steps),
                     "--resolution", str(args.resolution), "--batch", str(args.batch), "--rank", "4", "--seed", "1")
    measured = run_measured(command, f"train_step-raw-{tag}")
    all_steps = json.loads(report.read_text())["seconds_per_step"]
    return {"median_step": median(all_steps[1:]), "wall": measured.wall, "peak_rss": measured.peak_rss,
            "fixed": {"total": measured.wall - sum(all_steps)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--family", choices=sorted(RAW_LOOPS), default="sd1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default per size)")
    parser.add_argument("--resolution", type=int, help="pixels (default per size)")
    args = parser.parse_args()
    for key, value in PRESETS[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    model = ensure_model(args.size, family=args.family)
    dataset = ensure_dataset(RESULTS / "data" / f"train-{args.resolution}", count=max(4, args.batch))
    work = RESULTS / "work" / "train_step"
    work.mkdir(parents=True, exist_ok=True)

    rounds = []
    for index in range(args.rounds):
        order = (ours, raw) if index % 2 == 0 else (raw, ours)
        results = {runner.__name__: runner(model, dataset, work, args, f"{args.family}-{args.size}-{index}") for runner in order}
        results["ratio"] = results["ours"]["median_step"] / results["raw"]["median_step"]
        results["rss_ratio"] = results["ours"]["peak_rss"] / results["raw"]["peak_rss"]
        rounds.append(results)

    rows = [[i, r["ours"]["median_step"], r["raw"]["median_step"], r["ratio"], r["ours"]["peak_rss"] / GIB,
             r["raw"]["peak_rss"] / GIB, r["ours"]["wall"], r["raw"]["wall"]] for i, r in enumerate(rounds)]
    print_table(["round", "ours s/step", "raw s/step", "ratio", "ours RSS GiB", "raw RSS GiB", "ours wall s",
                 "raw wall s"], rows)
    summary = {"median_ratio": median([r["ratio"] for r in rounds]),
               "median_rss_ratio": median([r["rss_ratio"] for r in rounds]),
               "fixed_seconds": {name: median([r["ours"]["fixed"][name] for r in rounds])
                                 for name in rounds[0]["ours"]["fixed"]},
               "raw_fixed_seconds": median([r["raw"]["fixed"]["total"] for r in rounds]),
               "steps_seconds": args.steps * median([r["ours"]["median_step"] for r in rounds])}
    print(f"median step ratio ours/raw: {summary['median_ratio']:.3f}; peak RSS ratio: "
          f"{summary['median_rss_ratio']:.3f}")
    print(f"\nfixed costs, median over rounds, against {args.steps} steps of ours "
          f"({summary['steps_seconds']:.1f} s):")
    print_table(["part", "seconds", "share of the steps' time"],
                [[name, seconds, seconds / summary["steps_seconds"]] for name, seconds in
                 [*summary["fixed_seconds"].items(), ("raw loop total", summary["raw_fixed_seconds"])]])
    name = f"train_step-{args.size}" if args.family == "sd1" else f"train_step-{args.family}-{args.size}"
    path = write_results(name, {"settings": vars(args), "rounds": rounds, **summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
