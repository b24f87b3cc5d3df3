"""One resolution of the per-part learning rates for both trainers: unset = the base rate, 0 = that part frozen."""

from __future__ import annotations

import pytest
import torch

from library.config import load_config
from library.models.loader import load_base_model
from library.training.accelerator import Precision
from library.training.full_weights import FullWeights
from library.training.lora_weights import LoraWeights

BASE_LR, UNET_LR = 1e-4, 2e-4
STRATEGIES = {"lora": (LoraWeights, []), "full": (FullWeights, ["--train_text_encoder", "true"])}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize(
    ("text_encoder_lr", "expected_groups"),
    [
        (None, [("unet", UNET_LR), ("text_encoder", BASE_LR)]),
        (5e-5, [("unet", UNET_LR), ("text_encoder", 5e-5)]),
        (0.0, [("unet", UNET_LR)]),
    ],
)
def test_text_encoder_rate_means_the_same_in_both_trainers(
    tiny_sd1, tmp_path, strategy, text_encoder_lr, expected_groups
):
    weights_class, flags = STRATEGIES[strategy]
    flags = [*flags, "--pretrained_model_name_or_path", str(tiny_sd1.folder), "--train_data_dir", str(tmp_path),
             "--learning_rate", str(BASE_LR), "--unet_lr", str(UNET_LR)]
    if text_encoder_lr is not None:
        flags += ["--text_encoder_lr", str(text_encoder_lr)]
    model = load_base_model(tiny_sd1.folder)
    weights = weights_class(load_config(None, flags), model, Precision("no", torch.float32), torch.device("cpu"))

    groups = weights.param_groups()
    assert [(group["name"], group["lr"]) for group in groups] == expected_groups
    trained = {id(param) for group in groups for param in group["params"]}
    assert all(param.requires_grad == (id(param) in trained) for param in model.text_encoders[0].parameters())
    text_encoder_trains = text_encoder_lr != 0
    assert weights.trains_text_encoder == text_encoder_trains
    assert (model.text_encoders[0] in weights.modules_to_prepare()) == text_encoder_trains
    assert any(param.requires_grad for param in model.text_encoders[0].parameters()) == text_encoder_trains
