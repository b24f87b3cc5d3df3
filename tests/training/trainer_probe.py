"""Run the real LoRA trainer in this process and print, as JSON, what its setup did to the process and model.

``python tests/training/trainer_probe.py [--setup-only] <train_network.py arguments>``: thread counts, the UNet's
memory format and compile state, the dtypes the base is stored in, whether the VAE / text encoder still hold
weights, and the final file (when run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from library.config import parse_cli  # noqa: E402
from library.training.lora_weights import LoraWeights  # noqa: E402
from library.training.trainer import Trainer  # noqa: E402


def holds_weights(module: torch.nn.Module) -> bool:
    return all(not parameter.is_meta for parameter in module.parameters())


def main(argv: list[str]) -> None:
    setup_only = argv[:1] == ["--setup-only"]
    trainer = Trainer(parse_cli(argv[1:] if setup_only else argv), LoraWeights)
    trainer.setup()
    final = None if setup_only else trainer.run()
    unet = trainer.model.unet
    convs = [p for p in unet.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    print(json.dumps({
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "convs": len(convs),
        "channels_last_convs": sum(p.is_contiguous(memory_format=torch.channels_last) for p in convs),
        "contiguous_convs": sum(p.is_contiguous() for p in convs),
        "unet_compiled": getattr(unet, "_compiled_call_impl", None) is not None,
        "vae_holds_weights": holds_weights(trainer.model.vae),
        "text_encoders_hold_weights": [holds_weights(encoder) for encoder in trainer.model.text_encoders],
        "unet_dtype": str(next(p.dtype for n, p in unet.named_parameters() if "lora" not in n)),
        "base_dtypes": {
            name: sorted({str(p.dtype) for n, p in module.named_parameters() if "lora_" not in n})
            for name, module in (("unet", unet), *((f"text_encoder_{index}", encoder)
                                                   for index, encoder in enumerate(trainer.model.text_encoders)))
        },
        "final": None if final is None else str(final),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
