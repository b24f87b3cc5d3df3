"""Train/eval modes inside a running loop: the trained modules train (adapter dropout draws, text-encoder activation
checkpointing engages) at every step, also after previews and validation passes; frozen modules stay in eval."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from trainer_cli import base_args, read_events

from library.config import load_config
from library.training.full_weights import FullWeights
from library.training.lora_weights import LoraWeights
from library.training.trainer import Trainer

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class View:
    """The modules as one moment of the run finds them."""

    when: str
    unet: bool
    vae: bool
    text_encoder: bool
    dropout_draws: bool  # the LoRA dropout of a UNet and a text-encoder adapter gives a new mask each call


def _dropout_draws(trainer: Trainer) -> bool:
    network = trainer.weights.network
    if network is None:
        return False
    layers = [next(layer for name, layer in network.modules.items() if name.startswith(prefix))
              for prefix in ("lora_unet_", "lora_te_")]
    probe = torch.ones(4, 64)
    with torch.random.fork_rng(), torch.no_grad():
        return all(not torch.equal(layer.lora_dropout["default"](probe), layer.lora_dropout["default"](probe))
                   for layer in layers)


class ModeProbe(Trainer):
    """Records the modules' modes when the loop starts and when each optimizer step starts, and counts the text
    encoder layers' checkpointed calls."""

    def setup(self) -> None:
        super().setup()
        self.views: list[View] = []
        self.checkpointed = 0
        for module in self.model.text_encoders[0].modules():
            if getattr(module, "gradient_checkpointing", False):
                module._gradient_checkpointing_func = self._counting(module._gradient_checkpointing_func)

    def _counting(self, function):
        def counted(*args, **kwargs):
            self.checkpointed += 1
            return function(*args, **kwargs)

        return counted

    def look(self, when: str) -> None:
        model = self.model
        self.views.append(View(when, model.unet.training, model.vae.training, model.text_encoders[0].training,
                               _dropout_draws(self)))

    def run(self):
        self.look("start")
        return super().run()

    def _optimizer_step(self, position, window):
        self.look(f"step {position.global_step + 1}")
        return super()._optimizer_step(position, window)

    def _finish(self, position, smoothed):
        """One more validation pass at the last step (the run makes one there already): without dropout, the two
        losses are equal."""
        self._validate(position.global_step)
        return super()._finish(position, smoothed)


def _probe(weights_class, args: list[str]) -> ModeProbe:
    trainer = ModeProbe(load_config(None, args), weights_class)
    trainer.setup()
    trainer.run()
    return trainer


def _with_previews_and_validation(tmp_path, model, dataset, **overrides) -> list[str]:
    """6 steps; validation at 0, 2, 4 and 6, and the probe's second pass at 6; previews (1 denoising step) at 0,
    2, 4 and 6 (the end renders none again at step 6)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("frnc --s 1\n", encoding="utf-8")
    args = base_args(model, dataset, tmp_path / "out", max_train_steps=6, sample_prompts=prompts,
                     sample_every_n_steps=2, **overrides)
    return args + ["--sample.at_first", "true", "--dataset.validation_split", "0.25",
                   "--training.validation_every_n_steps", "2"]


def test_lora_trains_with_dropout_and_checkpointing_after_previews_and_validation(
    tiny_model_factory, concept_dataset, tmp_path
):
    args = _with_previews_and_validation(tmp_path, tiny_model_factory("sd1").folder, concept_dataset,
                                         network_dropout=0.5, gradient_checkpointing="true")
    trainer = _probe(LoraWeights, args)

    events = [event["event"] for event in read_events(tmp_path / "out")]
    assert events.count("sample") == 4 and events.count("validation") == 5
    assert [view.when for view in trainer.views] == ["start"] + [f"step {n}" for n in range(1, 7)]
    for view in trainer.views:  # steps 1-6 each come after a preview or a validation pass
        assert (view.unet, view.text_encoder, view.vae, view.dropout_draws) == (True, True, False, True), view
    layers = trainer.model.text_encoders[0].config.num_hidden_layers
    assert trainer.checkpointed == 6 * layers  # each step's text-encoder forward, nothing in the eval passes
    final_step = [e["loss"] for e in read_events(tmp_path / "out") if e["event"] == "validation" and e["step"] == 6]
    assert len(final_step) == 2 and final_step[0] == final_step[1]  # validation sees no dropout


def test_full_fine_tune_trains_in_training_mode_until_each_part_stops(tiny_model_factory, concept_dataset, tmp_path):
    args = _with_previews_and_validation(tmp_path, tiny_model_factory("sd1").folder, concept_dataset,
                                         instance_prompt="a photo of frnc", learning_rate=1e-5,
                                         train_text_encoder="true", stop_text_encoder_training=3)
    trainer = _probe(FullWeights, args)

    assert [view.when for view in trainer.views] == ["start"] + [f"step {n}" for n in range(1, 7)]
    for view in trainer.views:  # the text encoder trains for 3 steps, then is frozen like the VAE
        text_encoder_trains = view.when in ("start", "step 1", "step 2", "step 3")
        assert (view.unet, view.text_encoder, view.vae) == (True, text_encoder_trains, False), view
