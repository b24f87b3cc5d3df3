"""FLUX.1 LoRA networks for the file tests: peft adapters injected on diffusers module paths of the tiny model.

The adapters sit where the trainer puts them (every Linear of the double and single blocks, CLIP-L's attention and
MLP), each with a random up matrix so its effect is visible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from peft import inject_adapter_in_model
from torch import nn

from library.models.families import ModelFamily, get_family
from library.models.tiny import Components, build_components, tiny_configs
from library.networks import LoraNetwork, LoraOptions
from library.networks.lora_layers import LoraLayers
from library.networks.naming import LoraNamer
from library.networks.targets import ADAPTER, UNET, Target

PathFilter = Callable[[str], bool]


def block_linears(path: str) -> bool:
    """Every Linear of the double and single blocks."""
    return path.startswith(("transformer_blocks.", "single_transformer_blocks."))


def clip_linears(path: str) -> bool:
    return ".layers." in f".{path}"


def tiny_flux(name: str = "flux1-dev", seed: int = 0) -> tuple[ModelFamily, Components]:
    family = get_family(name)
    return family, build_components(family, tiny_configs(family), seed=seed)


def flux_network(
    family: ModelFamily,
    components: Components,
    options: LoraOptions,
    transformer_paths: PathFilter = block_linears,
    clip_paths: PathFilter | None = clip_linears,
    seed: int = 1,
) -> LoraNetwork:
    """peft LoRA adapters on the chosen Linears of the transformer (and CLIP-L), with random ups."""
    namer = LoraNamer(family, components.unet.config)
    roots: dict[str | int, nn.Module] = {UNET: components.unet, 0: components.text_encoders[0]}
    targets = [
        Target(namer.unet(path), UNET, path, options.dim, options.alpha)
        for path, module in components.unet.named_modules()
        if isinstance(module, nn.Linear) and transformer_paths(path)
    ]
    if clip_paths is not None:
        targets += [
            Target(namer.text_encoder(0, path), 0, path, options.dim, options.alpha)
            for path, module in components.text_encoders[0].named_modules()
            if isinstance(module, nn.Linear) and clip_paths(path)
        ]
    for component, root in roots.items():
        root.requires_grad_(False)
        mine = [target for target in targets if target.component == component]
        if mine:
            inject_adapter_in_model(LoraLayers.peft_config(options, mine), root, adapter_name=ADAPTER)
    layers = {target.name: roots[target.component].get_submodule(target.path) for target in targets}
    network = LoraNetwork(family, options, targets, layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network.modules.values():
            up = layer.lora_B[ADAPTER].weight
            up.copy_(torch.randn(up.shape, generator=generator) * 0.1)
    return network


def transformer_output(transformer: nn.Module) -> torch.Tensor:
    """The transformer's prediction for fixed random inputs (a tiny latent, text states, ids, timestep)."""
    generator = torch.Generator().manual_seed(0)
    config = transformer.config
    image_tokens, text_tokens = 16, 8
    with torch.no_grad():
        return transformer(
            hidden_states=torch.randn(1, image_tokens, config.in_channels, generator=generator),
            encoder_hidden_states=torch.randn(1, text_tokens, config.joint_attention_dim, generator=generator),
            pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=generator),
            timestep=torch.tensor([0.5]),
            guidance=torch.tensor([3.5]) if config.guidance_embeds else None,
            img_ids=torch.randn(image_tokens, 3, generator=generator),
            txt_ids=torch.zeros(text_tokens, 3),
            return_dict=False,
        )[0]
