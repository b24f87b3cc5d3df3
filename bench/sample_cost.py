"""What a sample preview costs: seconds per preview image (and per denoising step) with the live model.

Renders through ``render_samples``, the same call the trainer makes, ``--repeat`` times per sampler after one
warm-up; medians reported. Read against ``train_step.py``'s seconds per training step to choose
``sample.every_n_steps``.

``python bench/sample_cost.py [--size tiny|full] [--steps 20] [--samplers ddim euler_a]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

from common import RESULTS, ensure_model, median, print_table, write_results

RESOLUTION = {"tiny": 64, "full": 256}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(RESOLUTION), default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samplers", nargs="+", default=["ddim", "euler_a"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from library.models.loader import load_base_model
    from library.sampling.preview import render_samples
    from library.sampling.prompts import SamplePrompt

    model = load_base_model(ensure_model(args.size))
    size = RESOLUTION[args.size]
    rows, results = [], {}
    with tempfile.TemporaryDirectory(dir=RESULTS) as out:
        for sampler in args.samplers:
            prompt = SamplePrompt("frnc, red circle, blue background", width=size, height=size, steps=args.steps,
                                  cfg_scale=7.0, seed=1, sampler=sampler)
            seconds = []
            for attempt in range(args.repeat + 1):
                started = time.perf_counter()
                render_samples(model, [prompt], out, "bench", attempt)
                seconds.append(time.perf_counter() - started)
            per_image = median(seconds[1:])
            results[sampler] = {"seconds": seconds[1:], "per_image": per_image, "per_step": per_image / args.steps}
            rows.append([sampler, f"{size}x{size}", args.steps, per_image, per_image / args.steps])
    print_table(["sampler", "size", "steps", "s/image", "s/denoise step"], rows)
    print(f"wrote {write_results(f'sample_cost-{args.size}', {'settings': vars(args), 'samplers': results})}")


if __name__ == "__main__":
    main()
