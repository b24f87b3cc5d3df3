"""The moving average of trained weights: its update against the formula, its swap, its file and its resume state,
and which runs may keep one (the LoRA's ``network.ema_*`` and the full fine-tune's ``dreambooth.use_ema``)."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from library.config import ConfigError, load_config
from library.models.families import get_family
from library.networks import EmaInfo, TrainingInfo, checkpoint_metadata
from library.training.compare_at_end import grid_output_name
from library.training.ema import EmaSettings, ExponentialMovingAverage, ema_settings
from library.training.exceptions import ResumeError
from library.training.state import EMA_FILE, LoopPosition, load_training_state, register_ema_hooks, save_training_state
from library.training.state_manifest import SavedFor, verify_state, write_manifest


def _weights_over_steps(steps: int, dtype: torch.dtype = torch.float32) -> list[dict[str, torch.Tensor]]:
    """Known weights after each optimizer step 1..steps: two tensors that move differently."""
    generator = torch.Generator().manual_seed(7)
    return [{"a": torch.randn(3, 4, generator=generator).to(dtype), "b": torch.full((2,), float(step), dtype=dtype)}
            for step in range(1, steps + 1)]


def _run(settings: EmaSettings, steps: int, dtype: torch.dtype = torch.float32):
    """The EMA of weights that take the values of ``_weights_over_steps``; returns it and the values."""
    values = _weights_over_steps(steps, dtype)
    initial = {"a": torch.zeros(3, 4, dtype=dtype), "b": torch.full((2,), -1.0, dtype=dtype)}
    live = {name: tensor.clone() for name, tensor in initial.items()}
    ema = ExponentialMovingAverage(live, settings)
    for step, value in enumerate(values, start=1):
        for name, tensor in live.items():
            tensor.copy_(value[name])
        ema.after_step(step)
    return ema, initial, values


def _formula(settings: EmaSettings, initial, values) -> dict[str, torch.Tensor]:
    """The average written out in float64: updates on every ``update_every``-th step, with warm-up the first one
    takes the weights and update n (from 0) uses min(decay, (1 + n) / (10 + n))."""
    average = {name: tensor.double() for name, tensor in initial.items()}
    updates = 0
    for step, value in enumerate(values, start=1):
        if step % settings.update_every:
            continue
        if settings.warmup:
            decay = 0.0 if updates == 0 else min(settings.decay, (1 + updates) / (10 + updates))
        else:
            decay = settings.decay
        average = {name: decay * average[name] + (1 - decay) * value[name].double() for name in average}
        updates += 1
    return average


@pytest.mark.parametrize(
    "settings",
    [EmaSettings(0.9), EmaSettings(0.5, update_every=3), EmaSettings(0.8, warmup=False),
     EmaSettings(0.99, update_every=2, warmup=False)],
    ids=["warmup", "every-3", "no-warmup", "every-2-no-warmup"],
)
def test_the_update_equals_the_formula(settings):
    ema, initial, values = _run(settings, steps=9)
    expected = _formula(settings, initial, values)
    assert ema.updates == 9 // settings.update_every
    for name, average in ema.average.items():
        assert average.dtype == torch.float32
        torch.testing.assert_close(average.double(), expected[name], rtol=1e-6, atol=1e-7)


def test_warmup_decays_ramp_up_to_the_decay():
    settings = EmaSettings(0.25)
    assert [settings.decay_of_update(n) for n in range(4)] == [0.0, 2 / 11, 0.25, 0.25]
    assert EmaSettings(0.25, warmup=False).decay_of_update(0) == 0.25


def test_bf16_weights_average_in_fp32():
    settings = EmaSettings(0.9, warmup=False)
    ema, initial, values = _run(settings, steps=5, dtype=torch.bfloat16)
    expected = _formula(settings, initial, values)
    assert all(average.dtype == torch.float32 for average in ema.average.values())
    torch.testing.assert_close(ema.average["a"].double(), expected["a"], rtol=1e-6, atol=1e-7)
    # the average holds values bf16 cannot: it is not rounded to the weights' dtype
    assert not torch.equal(ema.average["a"], ema.average["a"].bfloat16().float())


def test_swapped_in_holds_the_average_and_restores_the_weights_exactly():
    ema, _, values = _run(EmaSettings(0.6), steps=4)
    live = ema.weights
    trained = {name: tensor.clone() for name, tensor in live.items()}
    with ema.swapped_in():
        assert all(torch.equal(live[name], ema.average[name]) for name in live)
        assert not torch.equal(live["a"], values[-1]["a"])
    assert all(torch.equal(live[name], trained[name]) for name in live)


def test_a_saved_average_continues_exactly(tmp_path):
    settings = EmaSettings(0.7, update_every=2)
    ema, _, _ = _run(settings, steps=5)
    ema.save(tmp_path / EMA_FILE)
    other = ExponentialMovingAverage({name: torch.zeros_like(t) for name, t in ema.weights.items()}, settings)
    other.load(tmp_path / EMA_FILE)
    assert other.updates == ema.updates == 2
    for step in (6, 7, 8):  # both go on from the same weights
        for source in (ema, other):
            for name, tensor in source.weights.items():
                tensor.copy_(torch.full_like(tensor, step / 10))
            source.after_step(step)
    assert other.updates == 4
    assert all(torch.equal(other.average[name], ema.average[name]) for name in ema.average)
    with safe_open(str(tmp_path / EMA_FILE), framework="pt") as handle:
        assert sorted(handle.keys()) == ["a", "b"]
        assert handle.get_tensor("a").dtype == torch.float32


@pytest.fixture
def accelerated(one_layer_accelerator):
    """The layer's weights averaged, the average in the state folder."""
    accelerator, layer, optimizer = one_layer_accelerator
    ema = ExponentialMovingAverage(dict(layer.named_parameters()), EmaSettings(0.5))
    register_ema_hooks(accelerator, ema)
    saved_for = SavedFor(optimizer="AdamW", processes=1, tensors={"layer.weight": [2, 3]}, ema=True)
    return accelerator, layer, optimizer, ema, saved_for


def test_the_state_folder_carries_the_average(accelerated, tmp_path):
    accelerator, layer, optimizer, ema, saved_for = accelerated
    for step in (1, 2):
        layer(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.after_step(step)
    state = save_training_state(accelerator, tmp_path, LoopPosition(global_step=2), saved_for)
    saved = {name: average.clone() for name, average in ema.average.items()}
    manifest = (state / "manifest.json").read_text(encoding="utf-8")
    assert f'"{EMA_FILE}"' in manifest and '"ema": true' in manifest

    for average in ema.average.values():
        average.fill_(123.0)
    ema.updates = 0
    load_training_state(accelerator, state, saved_for)
    assert ema.updates == 2
    assert all(torch.equal(ema.average[name], saved[name]) for name in saved)


def test_a_state_saved_without_an_average_is_refused_by_a_run_keeping_one(tmp_path):
    saved_for = SavedFor(optimizer="AdamW", processes=1, tensors={"x": [1]})
    write_manifest(tmp_path, saved_for)
    with pytest.raises(ResumeError, match=r"holds no EMA weights and this run keeps one; .*network\.ema_decay"):
        verify_state(tmp_path, saved_for.model_copy(update={"ema": True}))
    verify_state(tmp_path, saved_for)


def _config(tmp_path, **sections: str):
    text = f'[model]\npretrained_model_name_or_path = "m"\n[dataset]\ntrain_data_dir = "{tmp_path}"\n'
    text += "".join(f"[{name}]\n{body}\n" for name, body in sections.items())
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_each_strategy_takes_its_own_ema_options(tmp_path):
    lora = _config(tmp_path, network="ema_decay = 0.99\nema_update_every = 4\nema_warmup = false\nema_save = 'both'")
    assert ema_settings(lora, lora_run=True) == EmaSettings(0.99, 4, False, "both")
    with pytest.raises(ConfigError, match=r"^network\.ema_decay: applies to LoRA runs; .*dreambooth\.use_ema"):
        ema_settings(lora, lora_run=False)
    full = _config(tmp_path, dreambooth="use_ema = true\nema_decay = 0.95")
    assert ema_settings(full, lora_run=False) == EmaSettings(0.95)
    with pytest.raises(ConfigError, match=r"^dreambooth\.use_ema: applies to a full fine-tune; .*network\.ema_decay"):
        ema_settings(full, lora_run=True)
    assert ema_settings(_config(tmp_path), lora_run=True) is None
    with pytest.raises(ConfigError, match=r"^sample\.use_ema: there is no EMA"):
        ema_settings(_config(tmp_path, sample="use_ema = true"), lora_run=True)


@pytest.mark.parametrize(
    ("network", "sample", "expected"),
    [
        ("", "", "lora"),
        ("ema_decay = 0.9", "", "lora"),
        ("ema_decay = 0.9\nema_save = 'both'", "use_ema = false", "lora-raw"),
        ("ema_decay = 0.9\nema_save = 'both'", "use_ema = true", "lora"),
        ("ema_decay = 0.9\nema_save = 'raw'", "use_ema = false", "lora"),
        ("ema_decay = 0.9\nema_save = 'raw'", "", "lora"),
        ("ema_decay = 0.9", "use_ema = false", ConfigError),
        ("ema_decay = 0.9\nema_save = 'raw'", "use_ema = true", ConfigError),
    ],
)
def test_the_compare_grid_shows_the_saved_files_holding_the_weights_asked_for(tmp_path, network, sample, expected):
    config = _config(tmp_path, network=network, sample=f"prompts = 'p.txt'\ncompare_at_end = true\n{sample}",
                     output="output_name = 'lora'")
    if expected is ConfigError:
        with pytest.raises(ConfigError, match=r'^sample\.use_ema: the compare grid renders saved files, .*"both"'):
            grid_output_name(config)
    else:
        assert grid_output_name(config) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("ema_decay = 1", "network.ema_decay: must be < 1 (got 1)"),
        ("ema_decay = -0.1", "network.ema_decay: must be >= 0 (got -0.1)"),
        ("ema_decay = 0.9\nema_update_every = 0", "network.ema_update_every: must be >= 1 (got 0)"),
        ("ema_save = 'both'", "network.ema_save: needs network.ema_decay > 0 (the EMA is off)"),
        ("ema_decay = 0.9\nema_save = 'all'", "network.ema_save: must be one of 'ema', 'raw' or 'both'"),
    ],
)
def test_bad_ema_options_are_one_line_config_errors(tmp_path, body, message):
    with pytest.raises(ConfigError) as raised:
        _config(tmp_path, network=body)
    assert len(raised.value.messages) == 1 and message in raised.value.messages[0], raised.value.messages


def test_flat_names_reach_the_ema_options(tmp_path):
    config = _config(tmp_path)
    flat = load_config(tmp_path / "run.toml", ["--network_ema_decay", "0.95", "--network_ema_save", "raw",
                                               "--sample_use_ema", "true"])
    assert (config.network.ema_decay, flat.network.ema_decay, flat.network.ema_save) == (0.0, 0.95, "raw")
    assert (config.sample.use_ema, flat.sample.use_ema) == (None, True)


def test_a_checkpoint_records_the_ema_it_holds():
    info = TrainingInfo(output_name="db", resolution=(64, 64), learning_rate=1e-4,
                        ema=EmaInfo(ema_decay=0.9999, ema_update_every=1, ema_warmup=True, weights="ema"))
    metadata = checkpoint_metadata(get_family("sd1"), info)
    assert {key: metadata[key] for key in metadata if "ema" in key or key == "ss_weights"} == {
        "ss_ema_decay": "0.9999", "ss_ema_update_every": "1", "ss_ema_warmup": "True", "ss_weights": "ema"}
    plain = checkpoint_metadata(get_family("sd1"), TrainingInfo(output_name="db", resolution=(64, 64),
                                                                learning_rate=1e-4))
    assert not [key for key in plain if "ema" in key or key == "ss_weights"]
