"""How training teaches a concept, measured: judged sample scores against training steps.

On the toy-world base, the quickstart concept (``frnc``, a colour the base never saw, on a shape it knows) is trained
four ways from the shipped presets: a LoRA (``configs/quickstart.toml``) at two ranks, and a DreamBooth full
fine-tune (``configs/dreambooth_quickstart.toml``) with and without prior preservation. Every file a run saves is
sampled at fixed seeds and judged (:mod:`library.toyworld.scores`): ``concept`` is the share of trigger-prompt
samples that show the concept, ``prior`` the share of samples of the pretraining vocabulary (no trigger) that show
what they name, ``class`` the share of class-prompt samples ("a circle on a white background") that show the
class in a colour the base knows (what prior preservation keeps).

``python bench/concept.py [--quick] [--json FILE] [--every N] [--concept-seeds N] [--prior-seeds N] [--class-seeds N]``

Prints a table, writes ``bench/results/concept.json`` and a plot ``bench/results/concept.png``; ``--json FILE``
also writes the final scores of each run as ``{"base": {"concept", "prior", "class"}, "lora": {...}, ...}``.
``--quick`` scores only each run's final file, with fewer seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import RESULTS, print_table, python, run_measured, write_results

WORK = RESULTS / "work" / "concept"
RUNS: dict[str, tuple[str, str, dict[str, str]]] = {
    "lora": ("train_network.py", "configs/quickstart.toml", {}),
    "lora_rank4": ("train_network.py", "configs/quickstart.toml", {"network.dim": "4", "network.alpha": "4"}),
    "dreambooth_prior": ("train_dreambooth.py", "configs/dreambooth_quickstart.toml",
                         {"dreambooth.class_data_dir": str(WORK / "class")}),
    "dreambooth_no_prior": ("train_dreambooth.py", "configs/dreambooth_quickstart.toml",
                            {"dreambooth.class_data_dir": "", "dreambooth.num_class_images": "0"}),
}


def train(name: str, dataset: Path, every: int | None) -> Path:
    """One run of the preset with previews and the compare grid off; returns its output folder."""
    script, config, overrides = RUNS[name]
    output = WORK / name
    shutil.rmtree(output, ignore_errors=True)
    flags = {"train_data_dir": str(dataset), "output_dir": str(output), "output_name": name,
             "sample.prompts": "", "sample.compare_at_end": "false", "logging.tensorboard": "false",
             "output.save_last_n": "0", **overrides}
    if every:
        flags["output.save_every_n_steps"] = str(every)
    command = python(script, "--config", config, *[item for key, value in flags.items() for item in (f"--{key}", value)])
    measured = run_measured(command, f"concept-{name}")
    print(f"{name}: trained in {measured.wall:.0f} s")
    return output


def saved_files(output: Path, name: str) -> list[tuple[int, Path]]:
    """(steps trained, file) of every weight file a run saved, in training order."""
    from library.training.run_files import run_files, trained_steps

    return [(trained_steps(path), path) for path in run_files(output, name)]


def score_runs(outputs: dict[str, Path], seeds: dict[str, list[int]], quick: bool) -> dict:
    """Scores of the base and of every saved file: {run: [{"step", "concept", "prior", "class"}]}."""
    from library.models.loader import load_base_model
    from library.tools.compare import merged_into
    from library.toyworld.base_model import base_model_file
    from library.toyworld.scores import score_model
    from library.toyworld.world import QUICKSTART_CONCEPT

    def score(model) -> dict[str, float]:
        return score_model(model, QUICKSTART_CONCEPT, seeds["concept"], seeds["prior"], seeds["class"]).as_dict()

    base = load_base_model(base_model_file())
    curves = {"base": [{"step": 0, **score(base)}]}
    print(f"base: {curves['base'][0]}")
    for name, output in outputs.items():
        files = saved_files(output, name)
        files = files[-1:] if quick else files
        curve = [{"step": 0, **curves["base"][0]}] if not quick else []
        for steps, path in files:
            if RUNS[name][0] == "train_network.py":
                with merged_into(base)(path, 1.0):
                    scores = score(base)
            else:
                scores = score(load_base_model(path))
            curve.append({"step": steps, **scores})
            print(f"{name} step {steps}: {scores}")
        curves[name] = curve
    return curves


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, key, title in ((axes[0], "concept", "concept (trigger prompts)"),
                             (axes[1], "prior", "prior (pretraining vocabulary, no trigger)")):
        for name, curve in curves.items():
            if name != "base":
                axis.plot([point["step"] for point in curve], [point[key] for point in curve], marker="o", label=name)
        axis.axhline(curves["base"][0][key], color="grey", linestyle="--", label="base")
        axis.set_title(title)
        axis.set_xlabel("training step")
        axis.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("share of samples judged right")
    axes[1].legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="score final files only, with fewer seeds")
    parser.add_argument("--json", type=Path, help="also write the final scores of each run here")
    parser.add_argument("--every", type=int, default=50, help="save (and score) every N steps (default: 50)")
    parser.add_argument("--concept-seeds", type=int, help="trigger-prompt samples (default: 32, quick 16)")
    parser.add_argument("--prior-seeds", type=int, help="samples per vocabulary prompt (default: 2, quick 1)")
    parser.add_argument("--class-seeds", type=int, help="class-prompt samples (default: 32, quick 16)")
    args = parser.parse_args()
    seeds = {"concept": list(range(args.concept_seeds or (16 if args.quick else 32))),
             "prior": list(range(args.prior_seeds or (1 if args.quick else 2))),
             "class": list(range(args.class_seeds or (16 if args.quick else 32)))}

    from library.toyworld.datasets import write_concept_dataset
    from library.toyworld.world import QUICKSTART_CONCEPT

    dataset = WORK / "dataset"
    for stale in (dataset, WORK / "class"):  # class images come from the base model, which may have been rebuilt
        shutil.rmtree(stale, ignore_errors=True)
    write_concept_dataset(dataset, QUICKSTART_CONCEPT)
    outputs = {name: train(name, dataset, None if args.quick else args.every) for name in RUNS}
    curves = score_runs(outputs, seeds, args.quick)

    final = {name: {key: curve[-1][key] for key in ("concept", "prior", "class")} for name, curve in curves.items()}
    print_table(["run", "steps", "concept", "prior", "class"],
                [[name, curves[name][-1]["step"], *scores.values()] for name, scores in final.items()])
    write_results("concept", {"samples": {key: len(value) for key, value in seeds.items()}, "curves": curves,
                              "final": final})
    plot(curves, RESULTS / "concept.png")
    if args.json:
        args.json.write_text(json.dumps(final, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / 'concept.json'} and {RESULTS / 'concept.png'}")


if __name__ == "__main__":
    main()
