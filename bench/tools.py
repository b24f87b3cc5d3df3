"""The LoRA and checkpoint tools at full size (SD1.5): seconds and peak RSS, each run in its own process.

- ``resize`` (rank 32 -> 16), ``merge-loras --mode svd`` (two rank-32 LoRAs -> rank 32) and ``extract`` (rank 16
  from the rank-32 difference of a merged model and its base): the tools as they are (SVD from the factors,
  randomized SVD) against the full SVD of every module's out x in update they used to compute. The reference for
  resize and merge-loras is the ``reference`` worker below (the library's dense SVD of the formed update, then the
  same truncation), for extract ``extract --exact``. The closing lines of both runs are compared (energy kept,
  relative errors).
- ``merge-into`` and ``merge-models`` on the full-size fp32 single file (both stream): seconds, and peak RSS
  against the file's size.

The LoRAs have random factors (fp16, every module an SD1.5 LoRA adapts: 192 UNet + 72 text encoder). The model is
built once under ``results/models``. The reference runs take minutes each; ``--skip-reference`` leaves them out.
``--threads N`` sets OMP_NUM_THREADS for every run (a second thread that waits for a busy core slows torch down).

``python bench/tools.py [--size full|tiny] [--rank 32] [--threads N] [--skip-reference]``
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from common import GIB, RESULTS, ensure_single_file, print_table, python, run_measured, write_results

WORK = RESULTS / "work" / "tools"
_ENERGY = re.compile(r"mean energy kept ([\d.]+)%")
_ERROR = re.compile(r"mean relative error ([\d.]+)")
_BOUND = re.compile(r"within ([\d.e+-]+) of the exact")


def tool(*args: object) -> list[str]:
    return python("-m", "library.tools", *map(str, args))


def worker(*args: object) -> list[str]:
    return python(str(Path(__file__).resolve()), *map(str, args))


def measure(name: str, command: list[str], env: dict[str, str]) -> dict:
    """Run ``command`` to the end: wall seconds, peak RSS, and the figures its closing line reports."""
    measured = run_measured(command, f"tools-{name}", env)
    text = (RESULTS / "logs" / f"tools-{name}.log").read_text(encoding="utf-8")
    found = {"energy": _ENERGY, "error": _ERROR, "bound": _BOUND}
    figures = {key: float(match[-1]) for key, pattern in found.items() if (match := pattern.findall(text))}
    return {"seconds": measured.wall, "peak_rss": measured.peak_rss, **figures}


def make_lora(model: Path, out: Path, rank: int, seed: int) -> None:
    """A LoRA with random factors on every module SD1.5 LoRAs adapt (alpha = rank / 2, saved in fp16)."""
    import time

    import torch

    from library.networks import LoraOptions, lora_metadata
    from library.networks.lora_file import ModuleWeights
    from library.networks.metadata import TrainingInfo
    from library.networks.targets import UNET, find_targets
    from library.tools.common import write_lora
    from library.tools.model_source import open_model

    options = LoraOptions(dim=rank, alpha=rank / 2)
    generator = torch.Generator().manual_seed(seed)
    with open_model(model) as source:
        meta = source.meta_modules()
        roots = {UNET: meta["unet"], **{i: meta[spec.component] for i, spec in enumerate(source.family.text_encoders)}}
        modules = {}
        for target in find_targets(source.family, roots[UNET], list(roots.values())[1:], options):
            shape = roots[target.component].get_submodule(target.path).weight.shape
            down = torch.randn(rank, *shape[1:], generator=generator) / shape[1:].numel() ** 0.5
            up = torch.randn(shape[0], rank, *([1] * (len(shape) - 2)), generator=generator) * 0.05
            modules[target.name] = ModuleWeights(down, up, options.alpha, None)
        info = TrainingInfo(output_name=out.stem, resolution=(512, 512), learning_rate=1e-4,
                            training_started_at=time.time())
        write_lora(out, modules, lora_metadata(source.family, options, info), torch.float16)
    print(f"wrote {out}: {len(modules)} modules, rank {rank}")


def reference(kind: str, loras: list[Path], out: Path, rank: int) -> None:
    """What resize / merge-loras --mode svd computed before: the full SVD of each module's out x in update."""
    import torch
    from tqdm import tqdm

    from library.tools.common import read_lora_modules, write_lora
    from library.tools.lowrank import RankRule, dense_svd, factor_shapes, truncate

    inputs = [read_lora_modules(path) for path in loras]
    result, kept = {}, []
    for name, weights in tqdm(inputs[0][0].items(), desc=f"reference {kind}", unit="module"):
        update = sum(w.up.float().reshape(w.up.shape[0], w.rank) @ w.down.float().reshape(w.rank, -1) * w.scale
                     for w in (modules[name] for modules, _ in inputs))
        keep = weights.scale if kind == "resize" else None  # resize keeps alpha/rank, merges use alpha = rank
        factorised = truncate(dense_svd(update), RankRule(max_rank=rank), *factor_shapes(weights), keep)
        result[name] = factorised.weights
        kept.append(factorised.retained_energy)
    write_lora(out, result, inputs[0][1], torch.float16)
    print(f"wrote {out}: {len(result)} modules, mean energy kept {100 * sum(kept) / len(kept):.2f}%")


def run_all(size: str, rank: int, threads: int | None, skip_reference: bool) -> None:
    work = WORK / size
    work.mkdir(parents=True, exist_ok=True)
    base = ensure_single_file(size)
    env = {} if threads is None else {"OMP_NUM_THREADS": str(threads)}
    loras = [work / f"lora-{rank}-{seed}.safetensors" for seed in (1, 2)]
    for seed, lora in zip((1, 2), loras):
        if not lora.is_file():
            run_measured(worker("make-lora", base, lora, "--rank", rank, "--seed", seed), f"tools-{size}-lora-{seed}")
    half, tuned = rank // 2, work / "tuned.safetensors"
    runs = {  # in this order: the fp32 merge is the extracts' tuned model
        "merge-into (fp16 out)": tool("merge-into", base, loras[0], "--out", work / "merged.safetensors"),
        "merge-into (fp32 out)": tool("merge-into", base, loras[0], "--save-precision", "float", "--out", tuned),
        "merge-models (fp16 out)": tool("merge-models", base, tuned, "--out", work / "mm.safetensors"),
        "resize": tool("resize", loras[0], "--rank", half, "--out", work / "resized.safetensors"),
        "merge-loras svd": tool("merge-loras", *loras, "--mode", "svd", "--rank", rank, "--out",
                                work / "ml.safetensors"),
        "extract": tool("extract", tuned, base, "--rank", half, "--out", work / "extracted.safetensors"),
    }
    if not skip_reference:
        runs |= {
            "resize, full SVD": worker("reference", "resize", loras[0], work / "resized-ref.safetensors", "--rank",
                                       half),
            "merge-loras svd, full SVD": worker("reference", "merge-loras", *loras, work / "ml-ref.safetensors",
                                                "--rank", rank),
            "extract, full SVD (--exact)": tool("extract", tuned, base, "--rank", half, "--exact", "--out",
                                                work / "extracted-exact.safetensors"),
        }
    results = {name: measure(f"{size}-" + re.sub(r"\W+", "-", name).strip("-"), command, env)
               for name, command in runs.items()}
    checkpoint_bytes = base.stat().st_size
    print_table(
        ["run", "seconds", "peak RSS GiB", "RSS / checkpoint", "energy kept %", "mean rel. error", "excess bound"],
        [[name, r["seconds"], r["peak_rss"] / GIB, r["peak_rss"] / checkpoint_bytes, r.get("energy", ""),
          r.get("error", ""), r.get("bound", "")] for name, r in results.items()],
    )
    settings = {"size": size, "rank": rank, "threads": threads, "checkpoint": base.name,
                "checkpoint_bytes": checkpoint_bytes, "skip_reference": skip_reference}
    name = "tools" if size == "full" else f"tools-{size}"
    print(f"wrote {write_results(name, {'settings': settings, 'runs': results})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full", help="the sd1 model (tiny: a smoke run)")
    parser.add_argument("--rank", type=int, default=32, help="rank of the random LoRAs")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every run (default: torch's)")
    parser.add_argument("--skip-reference", action="store_true", help="leave out the full-SVD reference runs")
    workers = parser.add_subparsers(dest="worker", help="internal: steps run in their own process")
    maker = workers.add_parser("make-lora")
    maker.add_argument("model", type=Path)
    maker.add_argument("out", type=Path)
    maker.add_argument("--rank", type=int, required=True)
    maker.add_argument("--seed", type=int, required=True)
    old = workers.add_parser("reference")
    old.add_argument("kind", choices=["resize", "merge-loras"])
    old.add_argument("paths", type=Path, nargs="+", help="the input LoRA(s), then the output")
    old.add_argument("--rank", type=int, required=True)
    args = parser.parse_args()
    if args.worker == "make-lora":
        make_lora(args.model, args.out, args.rank, args.seed)
    elif args.worker == "reference":
        reference(args.kind, args.paths[:-1], args.paths[-1], args.rank)
    else:
        run_all(args.size, args.rank, args.threads, args.skip_reference)


if __name__ == "__main__":
    main()
