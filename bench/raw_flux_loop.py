"""The FLUX.1 yardstick for ``train_step.py``: the smallest honest LoRA loop on a diffusers FluxTransformer2DModel
(peft + AdamW), the step written as diffusers' ``train_dreambooth_lora_flux.py`` example writes it.

Latents (``(x - shift) * scale``) and the prompt encoding (FluxPipeline's ``encode_prompt``: T5 sequence, CLIP-L
pooled output, text ids) are computed once up front, as the trainer does with both caches on. Each step draws a
uniform index into the scheduler's training sigmas, mixes ``(1 - sigma) * x + sigma * noise``, packs the latents
2x2 with their image ids, calls the transformer with ``timestep / 1000`` and the guidance input, unpacks, and
takes the MSE against the velocity ``noise - x``; then backward and AdamW. The adapters go on every Linear inside
the double and single blocks (the trainer's FLUX.1 targets). Writes the per-step seconds as JSON.

Usage: ``raw_flux_loop.py MODEL_DIR DATASET_DIR REPORT.json --steps N --resolution R --batch B --rank D --seed S
[--guidance G]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
from peft import LoraConfig
from raw_loop import load_pixels

BLOCKS = (FluxTransformerBlock, FluxSingleTransformerBlock)


def block_linears(transformer: torch.nn.Module) -> list[str]:
    """Every Linear inside a double or single block, by its full module path."""
    return [f"{block_name}.{name}" for block_name, block in transformer.named_modules() if isinstance(block, BLOCKS)
            for name, module in block.named_modules() if isinstance(module, torch.nn.Linear)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("report", type=Path)
    for name, default in (("steps", 10), ("resolution", 64), ("batch", 1), ("rank", 4), ("seed", 1),
                          ("max_sequence_length", 512)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--guidance", type=float, default=1.0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    transformer = FluxTransformer2DModel.from_pretrained(args.model, subfolder="transformer")
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae")
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(args.model, subfolder="scheduler")
    text_pipeline = FluxPipeline.from_pretrained(args.model, transformer=None, vae=None)
    for module in (transformer, vae, text_pipeline.text_encoder, text_pipeline.text_encoder_2):
        module.requires_grad_(False)

    pixels, captions = load_pixels(args.dataset, args.resolution, args.batch)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample()
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        prompt_embeds, pooled_embeds, text_ids = text_pipeline.encode_prompt(
            captions, prompt_2=None, max_sequence_length=args.max_sequence_length)
    pixel_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    del vae, text_pipeline
    batch, channels, height, width = latents.shape
    image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, latents.device, latents.dtype)
    guidance = torch.full((batch,), args.guidance) if transformer.config.guidance_embeds else None

    targets = block_linears(transformer)
    transformer.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=targets,
                                       init_lora_weights=True))
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    transformer.train()
    seconds = []
    for _ in range(args.steps):
        started = time.perf_counter()
        noise = torch.randn_like(latents)
        indices = (torch.rand(batch) * scheduler.config.num_train_timesteps).long()
        timesteps, sigmas = scheduler.timesteps[indices], scheduler.sigmas[indices].view(-1, 1, 1, 1)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        prediction = transformer(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                                 pooled_projections=pooled_embeds, encoder_hidden_states=prompt_embeds,
                                 txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
        prediction = FluxPipeline._unpack_latents(prediction, height * pixel_scale, width * pixel_scale, pixel_scale)
        loss = torch.nn.functional.mse_loss(prediction.float(), (noise - latents).float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    report = {"seconds_per_step": seconds, "loss": float(loss.detach()), "adapted_modules": len(targets)}
    args.report.write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
