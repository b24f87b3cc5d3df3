"""The yardstick for ``train_step.py``: the smallest honest LoRA loop on a diffusers UNet (peft + AdamW).

Latents and text embeddings are computed once up front (as the trainer does with both caches on), then each
step is noise, UNet forward, MSE, backward, AdamW. Writes the per-step seconds as JSON.

Usage: ``raw_loop.py MODEL_DIR DATASET_DIR REPORT.json --steps N --resolution R --batch B --rank D --seed S``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def load_pixels(dataset: Path, resolution: int, count: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``count`` images, resized and centre-cropped, in [-1, 1]; their captions."""
    images, captions = [], []
    for path in sorted(dataset.rglob("*.png"))[:count]:
        image = Image.open(path).convert("RGB")
        scale = resolution / min(image.size)
        width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
        image = image.resize((width, height))
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1)
        captions.append(path.with_suffix(".txt").read_text(encoding="utf-8").strip())
    return torch.stack(images), captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("report", type=Path)
    for name, default in (("steps", 10), ("resolution", 64), ("batch", 1), ("rank", 4), ("seed", 1)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(args.model, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)

    pixels, captions = load_pixels(args.dataset, args.resolution, args.batch)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        embeddings = text_encoder(ids)[0]
    del vae, text_encoder

    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=TARGETS, init_lora_weights=True))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    unet.train()
    seconds = []
    for _ in range(args.steps):
        started = time.perf_counter()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],))
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, embeddings).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    args.report.write_text(json.dumps({"seconds_per_step": seconds, "loss": float(loss)}), encoding="utf-8")


if __name__ == "__main__":
    main()
