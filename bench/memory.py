"""Peak RSS of full-size SD1.5 and SDXL LoRA runs with the frozen base in bf16 and in fp8 (``model.fp8_base``), and
how far the fp8 UNet's noise prediction is from the bf16 one.

For each family, two ``train_network.py`` runs (each its own process, model load included, one at a time) with
gradient checkpointing, bf16 mixed precision, latent and text-encoder-output caching and a UNet-only LoRA: the frozen
base stored in bf16, then in fp8. RSS is sampled every 0.2 s; the report gives the whole-run peak (``ru_maxrss``),
the phase it fell in, the highest RSS during setup and during the steps, and the anonymous / file-backed split at
the peak. Then, in one more process per family, the bf16 and the fp8 UNet (loaded one after the other through the
trainer's loader) predict the noise for the same latents, timestep and conditioning under bf16 autocast: the
relative error is ``|fp8 - bf16| / |bf16|`` over the whole prediction. The models are built once (random weights,
stored in bf16: a full-size SDXL built in fp32 would need about 14 GiB).

``--families flux1-dev`` measures a full-size FLUX.1-dev transformer in fp8 instead (``flux_memory.py``: built in its
process, since its bf16 weights alone take 22 GiB), with ``--text-tokens`` T5 tokens and the compute dtype of
``--flux-compute``.

``python bench/memory.py [--size full|tiny] [--families sd1 sdxl flux1-dev] [--resolution 512] [--steps 2]
[--images 4] [--set key=value ...] [--text-tokens 512] [--flux-compute float32|bfloat16]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from common import (GIB, REPO, RESULTS, ensure_dataset, ensure_model, median, peak_phase, print_table, python,
                    read_events, run_measured, write_results)

MEMORY_OPTIONS = {
    "gradient_checkpointing": "true",
    "mixed_precision": "bf16",
    "cache_latents": "true",
    "cache_text_encoder_outputs": "true",
    "network_train_unet_only": "true",
}
VARIANTS = {"bf16": "false", "fp8": "true"}  # model.fp8_base


def phase_peaks(timeline: list[dict], events: list[dict]) -> dict[str, float]:
    """Highest sampled RSS (GiB) before the first step starts and while steps run."""
    steps = [event for event in events if event["event"] == "step"]
    first_step = steps[0]["time"] - steps[0]["seconds_per_step"] if steps else float("inf")
    setup = [sample["rss"] for sample in timeline if sample["time"] < first_step]
    training = [sample["rss"] for sample in timeline if sample["time"] >= first_step]
    return {"setup": max(setup, default=0) / GIB, "steps": max(training, default=0) / GIB}


def measure_run(model: Path, dataset: Path, output: Path, options: dict[str, str], args, log_name: str) -> dict:
    """One LoRA run in its own process: peak RSS, where it fell, per-phase peaks, step time."""
    shutil.rmtree(output, ignore_errors=True)
    flags = {"pretrained_model_name_or_path": model, "train_data_dir": dataset, "output_dir": output,
             "output_name": "bench", "resolution": args.resolution, "train_batch_size": 1, "network_dim": 4,
             "network_alpha": 4, "max_train_steps": args.steps, "seed": 1, "logging.tensorboard": "false", **options}
    command = python("train_network.py", *[item for key, value in flags.items() for item in (f"--{key}", str(value))])
    measured = run_measured(command, log_name)
    events = read_events(output / "progress.jsonl")
    peak = max(measured.timeline, key=lambda sample: sample["rss"], default={"anon": 0, "file": 0})
    seconds = [event["seconds_per_step"] for event in events if event["event"] == "step"][1:]
    return {"peak_rss": measured.peak_rss, "peak_phase": peak_phase(measured.timeline, events),
            "phase_peaks_gib": phase_peaks(measured.timeline, events), "peak_anon": peak.get("anon", 0),
            "peak_file": peak.get("file", 0), "median_step": median(seconds), "wall": measured.wall}


def unet_error(model: Path, resolution: int) -> dict:
    """(In its own process) the relative error of the fp8 UNet's noise prediction against the bf16 UNet's."""
    import gc

    import torch

    from library.models.loader import load_base_model

    def predict(fp8: bool) -> torch.Tensor:
        base = load_base_model(model, dtype=torch.bfloat16, vae_dtype=torch.float32, map_weights=True, fp8=fp8)
        unet, config = base.unet, base.unet.config
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(1, config.in_channels, resolution // 8, resolution // 8, generator=generator)
        context = torch.randn(1, 77, config.cross_attention_dim, generator=generator)
        extra = {}
        if config.addition_embed_type == "text_time":
            pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
            extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled, generator=generator),
                                          "time_ids": torch.tensor([[resolution, resolution, 0, 0, resolution,
                                                                     resolution]], dtype=torch.float32)}
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = unet(latents, torch.tensor([500]), context, **extra).sample.float()
        del base, unet
        gc.collect()
        return prediction

    reference = predict(fp8=False)
    fp8 = predict(fp8=True)
    return {"relative_error": ((fp8 - reference).norm() / reference.norm()).item(),
            "max_abs_error": (fp8 - reference).abs().max().item(), "reference_rms": reference.pow(2).mean().sqrt().item()}


def measure_flux(args) -> tuple[dict, list]:
    """The full-size FLUX.1-dev transformer in fp8 (its own process): the report entry and its table row."""
    name = f"memory-flux1-dev-full-{args.resolution}-fp8"
    measured = run_measured(python(str(REPO / "bench" / "flux_memory.py"), "--resolution", str(args.resolution),
                                   "--steps", str(args.steps), "--text-tokens", str(args.text_tokens),
                                   "--compute", args.flux_compute), name)
    inside = json.loads((RESULTS / "logs" / f"{name}.log").read_text(encoding="utf-8").strip().splitlines()[-1])
    report = {**inside, "peak_rss": measured.peak_rss, "wall": measured.wall}
    row = [inside["parameters"] / 1e9, inside["bf16_weights_gib"], inside["stored_gib"]["torch.float8_e4m3fn"],
           inside["rss_after_build_gib"], measured.peak_rss / GIB, median(inside["step_seconds"])]
    return report, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--families", nargs="+", choices=["sd1", "sdxl", "flux1-dev"], default=["sd1", "sdxl"])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=4, help="training images (each has its latents cached)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra or overriding train_network.py options, e.g. gradient_checkpointing=false")
    parser.add_argument("--text-tokens", type=int, default=512, help="FLUX.1: T5 tokens per caption")
    parser.add_argument("--flux-compute", choices=["float32", "bfloat16"], default="float32",
                        help="FLUX.1: the dtype its fp8 layers up-cast to")
    parser.add_argument("--unet-error", type=Path, help=argparse.SUPPRESS)  # the per-family error process
    args = parser.parse_args()
    if args.unet_error:
        print(json.dumps(unet_error(args.unet_error, args.resolution)))
        return
    options = {**MEMORY_OPTIONS, **dict(item.split("=", 1) for item in args.set)}
    report, rows = {}, []
    if "flux1-dev" in args.families:
        report["flux1-dev"], flux_row = measure_flux(args)
        print_table(["FLUX.1-dev transformer", "bf16 weights GiB", "fp8 weights GiB", "RSS built GiB", "peak GiB",
                     "s/step"], [[f"{flux_row[0]:.1f} B parameters", *flux_row[1:]]])
    stable_diffusion = [family for family in args.families if family != "flux1-dev"]
    if stable_diffusion:
        dataset = ensure_dataset(RESULTS / "data" / f"train-{args.resolution}-{args.images}", count=args.images)
    for family in stable_diffusion:
        model = ensure_model(args.size, family, "bfloat16")
        runs = {}
        for variant, fp8 in VARIANTS.items():
            name = f"memory-{family}-{args.size}-{args.resolution}-{variant}"
            output = RESULTS / "work" / "memory" / name
            runs[variant] = measure_run(model, dataset, output, {**options, "fp8_base": fp8}, args, name)
        error_log = RESULTS / "logs" / f"memory-{family}-{args.size}-unet-error.log"
        run_measured([sys.executable, str(REPO / "bench" / "memory.py"), "--unet-error", str(model),
                      "--resolution", str(args.resolution)], error_log.stem)
        error = json.loads(error_log.read_text(encoding="utf-8").strip().splitlines()[-1])
        report[family] = {**runs, "unet_error": error}
        bf16, fp8 = runs["bf16"], runs["fp8"]
        rows.append([family, bf16["peak_rss"] / GIB, fp8["peak_rss"] / GIB, fp8["peak_rss"] / bf16["peak_rss"],
                     f"{bf16['peak_phase']} / {fp8['peak_phase']}", bf16["phase_peaks_gib"]["steps"],
                     fp8["phase_peaks_gib"]["steps"], bf16["median_step"], fp8["median_step"],
                     error["relative_error"]])
    if rows:
        print_table(["model", "bf16 peak GiB", "fp8 peak GiB", "ratio", "peak phase", "bf16 steps GiB", "fp8 steps GiB",
                     "bf16 s/step", "fp8 s/step", "UNet rel. error"], rows)
    name = f"memory-{args.size}-{args.resolution}-{'-'.join(args.families)}"
    settings = {key: value for key, value in vars(args).items() if key != "unet_error"}
    print(f"wrote {write_results(name, {'settings': {**settings, 'options': options}, **report})}")


if __name__ == "__main__":
    main()
