"""Fixed-seed validation loss: the same held-out images, noise and timesteps at every evaluation.

Training loss jumps with the random timestep of each batch; with everything random fixed, the validation loss
moves only when the weights do, so a falling curve means the adapter learned something that generalises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from library.models.modes import evaluating
from library.models.text_encoding import TextConditioning
from library.training.loss import weighted_mean
from library.training.objective import Objective

VALIDATION_TIMESTEPS = (100, 300, 500, 700, 900)


@torch.no_grad()
def fixed_validation_loss(
    unet: torch.nn.Module,
    objective: Objective,
    latents_per_batch: Sequence[torch.Tensor],
    condition: Callable[[int], tuple[TextConditioning, torch.Tensor | None]],
    weights_per_batch: Sequence[torch.Tensor],
    seed: int,
    modules: Sequence[torch.nn.Module],
    timesteps: Sequence[int] = VALIDATION_TIMESTEPS,
    masks_per_batch: Sequence[torch.Tensor | None] | None = None,
) -> float:
    """Mean loss over validation batches x fixed timesteps, with noise from a generator seeded by ``seed``.

    ``timesteps`` are points of the 1000-step grid; ``objective`` turns each into its own kind (a DDPM timestep,
    a flow-matching sigma). ``condition(i)`` returns batch ``i``'s text conditioning (recomputed: the text encoder may be training) and
    its SDXL time ids (or None). ``modules`` are all the pass runs through (UNet, text encoders): they run in eval
    mode, so adapter dropout cannot move the loss, and keep their own modes afterwards. ``masks_per_batch`` holds
    each batch's loss masks (masked loss; None for an unmasked batch).
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    total, count = 0.0, 0
    with evaluating(modules):
        for index, latents in enumerate(latents_per_batch):
            conditioning, time_ids = condition(index)
            for timestep in timesteps:
                noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(
                    latents.device, latents.dtype
                )
                steps = objective.fixed_timesteps(latents.shape[0], timestep, latents.device)
                masks = masks_per_batch[index] if masks_per_batch is not None else None
                per_sample = objective.loss(unet, latents, noise, steps, conditioning, time_ids, masks)
                loss = weighted_mean(per_sample, weights_per_batch[index])
                total += float(loss)
                count += 1
    return total / max(count, 1)
