"""(One process of ``memory.py --families flux1-dev``) a full-size FLUX.1-dev transformer with its frozen weights in
fp8, and LoRA training steps over it: resident memory of the weights and of the steps.

A full-size FLUX.1 transformer has 11.9 billion parameters: 22 GiB in bf16, more than this machine can hold beside
anything else, and a file of it could not be written here. So the transformer is built in this process, the way
``model.fp8_base`` leaves a loaded one: every Linear weight that :mod:`library.models.fp8` stores in fp8 is created
directly in ``float8_e4m3fn`` (random, scaled like a default init), the rest (biases, norms) in the compute dtype;
then the project's own fp8 layers (:func:`store_in_fp8`) and LoRA injection (:func:`inject_lora`, UNet-only, all
blocks) and the trainer's flow-matching prediction (:func:`flux_prediction`) with gradient checkpointing on, as a
``train_network.py`` run with ``fp8_base``, ``gradient_checkpointing`` and cached text-encoder outputs has it. The
text-encoder outputs and latents are random tensors of the real widths (T5-XXL 4096, CLIP-L pooled 768, 16 latent
channels). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

import torch
from torch import nn

GIB = 1024**3


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def build_fp8_transformer(compute_dtype: torch.dtype, seed: int) -> nn.Module:
    """The full-size transformer with its fp8 layers' weights created in fp8 and every other tensor in
    ``compute_dtype``, one tensor at a time (never a bf16 or fp32 copy of the whole model)."""
    from diffusers import FluxTransformer2DModel

    from library.models.fp8 import fp8_dtype, fp8_layer_names, store_in_fp8
    from library.models.single_file import reference_configs

    config = {key: value for key, value in reference_configs("flux1-dev")["transformer"].items()
              if not key.startswith("_")}
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**config)
    in_fp8 = set(fp8_layer_names(transformer))
    generator = torch.Generator().manual_seed(seed)
    for name, module in transformer.named_modules():
        for key, parameter in list(module._parameters.items()):
            if parameter is None:
                continue
            if key == "weight" and parameter.dim() >= 2:
                std = 1 / math.sqrt(math.prod(parameter.shape[1:]))
                value = torch.randn(parameter.shape, generator=generator, dtype=compute_dtype).mul_(std)
                value = value.to(fp8_dtype()) if name in in_fp8 else value
            elif key == "weight":
                value = torch.ones(parameter.shape, dtype=compute_dtype)
            else:
                value = torch.zeros(parameter.shape, dtype=compute_dtype)
            module._parameters[key] = nn.Parameter(value, requires_grad=False)
    left_on_meta = [name for name, tensor in [*transformer.named_parameters(), *transformer.named_buffers()]
                    if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"tensors left unbuilt: {left_on_meta[:5]}")
    store_in_fp8(transformer, compute_dtype)
    return transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--text-tokens", type=int, default=512, help="T5 sequence length (FLUX.1-dev trains at 512)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--compute", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()

    from library.models.families import get_family
    from library.models.text_encoding import TextConditioning
    from library.networks.config import LoraOptions
    from library.networks.network import inject_lora
    from library.training.flow_step import flux_prediction

    torch.manual_seed(0)
    compute_dtype = getattr(torch, args.compute)
    family = get_family("flux1-dev")
    started = time.perf_counter()
    transformer = build_fp8_transformer(compute_dtype, seed=0)
    build_seconds = time.perf_counter() - started
    stored = {str(dtype): 0 for dtype in (torch.float8_e4m3fn, compute_dtype)}
    for tensor in transformer.parameters():
        stored[str(tensor.dtype)] += tensor.numel() * tensor.element_size()
    parameters = sum(tensor.numel() for tensor in transformer.parameters())
    after_build = resident_bytes()

    network = inject_lora(family, transformer, [], LoraOptions(dim=args.rank, alpha=args.rank, train_unet_only=True))
    transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = torch.optim.AdamW(network.trainable_parameters(), lr=1e-4)
    latent_size = args.resolution // 8
    step_seconds = []
    for _ in range(args.steps):
        latents = torch.randn(1, 16, latent_size, latent_size)
        noise = torch.randn_like(latents)
        sigmas = torch.rand(1)
        noisy = (1 - sigmas.view(-1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1) * noise
        conditioning = TextConditioning(torch.randn(1, args.text_tokens, 4096, dtype=compute_dtype),
                                        torch.randn(1, 768, dtype=compute_dtype))
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=compute_dtype == torch.bfloat16):
            prediction = flux_prediction(transformer, family, noisy.to(compute_dtype), sigmas, conditioning, 3.5)
        loss = (prediction.float() - (noise - latents)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds.append(time.perf_counter() - started)
    print(json.dumps({
        "parameters": parameters,
        "stored_gib": {dtype: size / GIB for dtype, size in stored.items()},
        "bf16_weights_gib": parameters * 2 / GIB,
        "lora_parameters": sum(p.numel() for p in network.trainable_parameters()),
        "rss_after_build_gib": after_build / GIB,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        "build_seconds": build_seconds,
        "step_seconds": step_seconds,
        "settings": vars(args),
    }))


if __name__ == "__main__":
    main()
