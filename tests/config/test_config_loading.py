"""Loading: flat sd-scripts names, overrides and their precedence, value forms, round trips, trainer helpers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from library.config import (
    FLAT_ALIASES,
    ConfigError,
    FurnaceConfig,
    dump_toml,
    exit_on_config_error,
    load_config,
    loads_config,
    parse_cli,
    save_resolved,
)
from library.config.keys import FIELD_PATHS

KOHYA_FLAT_TOML = """
pretrained_model_name_or_path = "models/v1-5.safetensors"
v2 = false
v_parameterization = false
train_data_dir = "datasets/img"
reg_data_dir = ""
vae = ""
output_dir = "out"
output_name = "my_lora"
resolution = "512,768"
train_batch_size = 3
max_train_epochs = 4
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
network_args = ["conv_dim=8", "conv_alpha=4"]
unet_lr = 0.0001
text_encoder_lr = 5e-5
optimizer_type = "adamw8bit"
optimizer_args = ["weight_decay=0.1", "betas=0.9,0.99", "relative_step=False"]
lr_scheduler = "cosine_with_restarts"
lr_warmup_steps = 0.1
mixed_precision = "fp16"
save_precision = "bf16"
save_model_as = "safetensors"
save_every_n_epochs = 1
save_last_n_epochs = 2
cache_latents = true
cache_latents_to_disk = true
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
shuffle_caption = true
keep_tokens = 1
caption_extension = "caption"
max_data_loader_n_workers = 2
persistent_data_loader_workers = true
xformers = true
sample_sampler = "k_euler_a"
sample_every_n_epochs = 1
logging_dir = "out/tb"
log_with = "tensorboard"
seed = 1234
clip_skip = 2
"""


def test_flat_sd_scripts_toml_maps_onto_the_schema(write_config):
    config = load_config(write_config(KOHYA_FLAT_TOML))
    assert config.model.pretrained_model_name_or_path == "models/v1-5.safetensors"
    assert config.model.family == "auto"
    assert config.model.vae is None and config.dataset.reg_data_dir is None
    assert config.model.clip_skip == 2
    assert config.dataset.resolution == (512, 768)
    assert config.dataset.batch_size == 3
    assert config.dataset.caption_extension == ".caption"
    assert config.dataset.cache_latents and config.dataset.cache_latents_to_disk
    assert config.dataset.num_workers == 2
    assert (config.network.dim, config.network.alpha) == (32, 16.0)
    assert (config.network.conv_dim, config.network.conv_alpha) == (8, 4.0)
    assert (config.network.unet_lr, config.network.text_encoder_lr) == (1e-4, 5e-5)
    assert config.optimizer.type == "AdamW8bit"
    assert config.optimizer.weight_decay == 0.1
    assert config.optimizer.betas == (0.9, 0.99)
    assert config.optimizer.args == {"relative_step": False}
    assert config.optimizer.lr_warmup_steps == 0.1
    assert config.training.max_train_epochs == 4 and config.training.seed == 1234
    assert config.training.mixed_precision == "fp16"
    assert config.sample.sampler == "euler_a"
    assert (config.output.output_dir, config.output.output_name) == ("out", "my_lora")
    assert config.output.save_last_n == 2 and config.output.save_precision == "bf16"
    assert config.logging.log_dir == "out/tb" and config.logging.tensorboard


@pytest.mark.parametrize(
    ("flags", "family"),
    [
        ("v2 = true", "sd2"),
        ("v2 = true\nv_parameterization = true", "sd2-v"),
        ("v_parameterization = true\nv2 = true", "sd2-v"),
        ("sdxl = true", "sdxl"),
        ("v2 = false", "auto"),
    ],
)
def test_family_switches(write_config, run_toml, flags, family):
    assert load_config(write_config(run_toml(top=flags))).model.family == family


def test_conv_alpha_defaults_to_one_with_conv_dim(write_config, run_toml):
    config = load_config(write_config(run_toml(network="conv_dim = 8")))
    assert (config.network.conv_dim, config.network.conv_alpha) == (8, 1.0)


def test_lycoris_network_args_select_lokr(write_config, run_toml):
    """sd-scripts + LyCORIS spelling: network_module = lycoris.kohya, the algorithm and its options in network_args."""
    top = 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=lokr", "factor=8", "full_matrix=True", "conv_dim=4"]'
    network = load_config(write_config(run_toml(top=top))).network
    assert (network.module, network.lokr_factor, network.lokr_full_matrix, network.conv_dim) == ("lokr", 8, True, 4)
    assert load_config(write_config(run_toml(network='module = "lokr"'))).network.lokr_factor == -1
    plain = load_config(write_config(run_toml(top='network_module = "lycoris.kohya"\nnetwork_args = ["algo=locon"]')))
    assert plain.network.module == "lora"


def test_sd_scripts_flux_block_selection_reaches_the_network_options(write_config, run_toml):
    """sd-scripts' FLUX.1 spelling: networks.lora_flux, train_blocks and the block indices in network_args (a single
    index or a plain list arrives as a Python literal, ranges as text)."""
    from library.training.lora_weights import lora_options

    top = ('network_module = "networks.lora_flux"\nnetwork_args = ["train_blocks=double", '
           '"train_double_block_indices=0,2-4", "train_single_block_indices=7"]')
    options = lora_options(load_config(write_config(run_toml(top=top))))
    assert (options.module, options.train_blocks, options.block_indices) == (
        "lora", "double", {"double": "0,2-4", "single": "7"})
    assert [index for index in range(6) if options.trains_block("double", index)] == [0, 2, 3, 4]
    assert not options.trains_block("single", 7)  # train_blocks = double leaves every single block out
    listed = load_config(write_config(run_toml(top='network_args = ["train_double_block_indices=0,1"]')))
    assert listed.network.train_double_block_indices == "0,1"


def test_lora_save_format_from_toml_and_flag_reaches_the_network_options(write_config, run_toml):
    from library.training.lora_weights import lora_options

    path = write_config(run_toml(network='save_format = "diffusers"'))
    assert lora_options(load_config(path)).save_format == "diffusers"
    assert lora_options(load_config(path, ["--network.save_format", "kohya"])).save_format == "kohya"
    assert load_config(write_config(run_toml())).network.save_format == "kohya"
    with pytest.raises(ConfigError, match="network.save_format"):
        load_config(write_config(run_toml(network='save_format = "ckpt"')))


def test_overrides_win_over_the_file(write_config, run_toml):
    path = write_config(run_toml(network="dim = 8\nalpha = 4", training="seed = 1"))
    config = load_config(path, ["--network_dim", "32", "--network.alpha=16", "--seed", "7"])
    assert (config.network.dim, config.network.alpha, config.training.seed) == (32, 16.0, 7)
    assert load_config(path).network.dim == 8


def test_last_override_wins(write_config, run_toml):
    config = load_config(write_config(run_toml()), ["--seed", "1", "--training.seed", "2"])
    assert config.training.seed == 2


def test_overrides_alone_build_a_config():
    config = load_config(None, ["--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--v2"])
    assert config.model.family == "sd2"
    assert config.dataset.train_data_dir == "d"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--gradient_checkpointing"], True),
        (["--gradient_checkpointing", "true"], True),
        (["--gradient_checkpointing", "false"], False),
        (["--gradient_checkpointing=no"], False),
        (["--training.gradient_checkpointing", "--seed", "5"], True),
        (["--seed", "5", "--gradient_checkpointing"], True),
    ],
)
def test_boolean_flags_bare_or_explicit(write_config, run_toml, overrides, expected):
    opposite = "false" if expected else "true"
    path = write_config(run_toml(training=f"gradient_checkpointing = {opposite}"))
    assert load_config(path, overrides).training.gradient_checkpointing is expected


def test_bare_flag_before_another_flag_keeps_both(write_config, run_toml):
    config = load_config(write_config(run_toml()), ["--cache_latents", "--flip_aug", "--seed", "9"])
    assert config.dataset.cache_latents and config.dataset.flip_aug and config.training.seed == 9


@pytest.mark.parametrize(
    ("toml_value", "expected"),
    [
        ("512", (512, 512)),
        ('"512,768"', (512, 768)),
        ('"640"', (640, 640)),
        ("[640, 448]", (640, 448)),
        ("[64]", (64, 64)),
    ],
)
def test_resolution_forms_in_toml(write_config, run_toml, toml_value, expected):
    config = load_config(write_config(run_toml(dataset=f"resolution = {toml_value}")))
    assert config.dataset.resolution == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--resolution", "768"], (768, 768)),
        (["--resolution", "512,768"], (512, 768)),
        (["--dataset.resolution=[640,448]"], (640, 448)),
    ],
)
def test_resolution_forms_on_the_command_line(write_config, run_toml, override, expected):
    assert load_config(write_config(run_toml()), override).dataset.resolution == expected


def test_string_fields_keep_raw_text_and_others_parse_as_toml(write_config, run_toml):
    overrides = [
        "--output_name", "007", "--caption_extension", ".caption", "--learning_rate", "1e-3",
        "--optimizer.betas", "[0.8, 0.95]", "--optimizer.args", "{ d_coef = 2 }", "--noise_offset", "0.05",
        "--resume", "latest", "--lr_scheduler", "cosine", "--lr_warmup_steps", "50",
    ]
    config = load_config(write_config(run_toml()), overrides)
    assert config.output.output_name == "007"
    assert config.dataset.caption_extension == ".caption"
    assert config.optimizer.learning_rate == 1e-3
    assert config.optimizer.betas == (0.8, 0.95)
    assert config.optimizer.args == {"d_coef": 2}
    assert config.training.noise_offset == 0.05
    assert config.training.resume == "latest"
    assert config.optimizer.lr_warmup_steps == 50


def test_list_option_takes_every_following_value(write_config, run_toml):
    overrides = [
        "--network_args", "conv_dim=4", "conv_alpha=2", "--optimizer_args", "eps=1e-6", "d_coef=2", "--seed", "3",
    ]
    config = load_config(write_config(run_toml()), overrides)
    assert (config.network.conv_dim, config.network.conv_alpha) == (4, 2.0)
    assert config.optimizer.eps == 1e-6 and config.optimizer.args == {"d_coef": 2}
    assert config.training.seed == 3


def test_every_flat_alias_targets_a_schema_field():
    assert set(FLAT_ALIASES.values()) <= set(FIELD_PATHS)


SD_SCRIPTS_FLAGS = {
    "--network_dim": "16", "--network_alpha": "8", "--learning_rate": "1e-4", "--unet_lr": "1e-4",
    "--text_encoder_lr": "5e-5", "--dataset_config": "ds.toml", "--reg_data_dir": "reg",
    "--pretrained_model_name_or_path": "m.safetensors", "--output_dir": "out", "--output_name": "n",
    "--max_train_steps": "10", "--max_train_epochs": "2", "--resolution": "512,768", "--train_batch_size": "2",
    "--resume": "latest", "--seed": "3", "--mixed_precision": "bf16", "--save_precision": "float",
    "--save_every_n_epochs": "1", "--optimizer_type": "Lion", "--lr_scheduler": "linear", "--lr_warmup_steps": "5",
    "--gradient_checkpointing": "true", "--gradient_accumulation_steps": "2", "--clip_skip": "2",
    "--noise_offset": "0.1", "--min_snr_gamma": "5", "--network_weights": "w.safetensors", "--network_dropout": "0.1",
    "--network_train_unet_only": "true", "--sample_prompts": "p.txt", "--sample_every_n_steps": "5",
    "--sample_every_n_epochs": "1", "--sample_sampler": "ddim", "--cache_latents": "true",
    "--cache_latents_to_disk": "true", "--logging_dir": "logs", "--caption_extension": ".txt",
    "--shuffle_caption": "true", "--keep_tokens": "1", "--flip_aug": "true", "--enable_bucket": "true",
    "--min_bucket_reso": "256", "--max_bucket_reso": "1024", "--bucket_reso_steps": "64",
    "--bucket_no_upscale": "true", "--prior_loss_weight": "0.5", "--max_grad_norm": "0", "--save_last_n_epochs": "3",
    "--v2": "true", "--v_parameterization": "true",
}


def test_sd_scripts_flags_are_accepted():
    argv = [token for flag, value in SD_SCRIPTS_FLAGS.items() for token in (flag, value)]
    config = load_config(None, argv)
    assert config.dataset.dataset_config == "ds.toml" and config.dataset.train_data_dir is None
    assert config.model.family == "sd2-v"
    assert config.network.train_unet_only and config.network.dropout == 0.1
    assert config.output.save_last_n == 3 and config.optimizer.max_grad_norm == 0
    assert config.logging.log_dir == "logs" and config.sample.prompts == "p.txt"


RICH_TOML = """
[model]
pretrained_model_name_or_path = "models/x.safetensors"
family = "sdxl"
vae = "models/vae.safetensors"
[dataset]
dataset_config = "ds.toml"
resolution = [1024, 768]
enable_bucket = true
caption_prefix = "photo of "
[network]
dim = 8
conv_dim = 4
use_dora = true
text_encoder_lr = 0
[optimizer]
type = "Prodigy"
learning_rate = 1.0
lr_scheduler = "cosine"
lr_warmup_steps = 0.05
args = { d_coef = 2, use_bias_correction = true, growth = [1.0, 2.0] }
[training]
max_train_epochs = 3
min_snr_gamma = 5
[output]
training_comment = "round trip"
"""


MINIMAL_TOML = "[model]\npretrained_model_name_or_path = 'm'\n[dataset]\ntrain_data_dir = 'd'\n"


@pytest.mark.parametrize("text", [RICH_TOML, MINIMAL_TOML], ids=["rich", "minimal"])
def test_dump_then_load_gives_an_equal_config(text):
    config = loads_config(text, "rich.toml")
    dumped = dump_toml(config)
    assert loads_config(dumped, "dumped.toml") == config
    assert dump_toml(loads_config(dumped)) == dumped


def test_dump_writes_every_section_and_omits_unset(write_config, run_toml):
    dumped = dump_toml(load_config(write_config(run_toml())))
    for section in FurnaceConfig.model_fields:
        assert f"[{section}]" in dumped
    assert "max_train_steps = 1600" in dumped
    assert "vae" not in dumped and "max_train_epochs" not in dumped


def test_save_resolved_writes_atomically_and_loads_back(tmp_path):
    config = loads_config(RICH_TOML, "rich.toml")
    target = save_resolved(config, tmp_path / "run" / "config.toml")
    assert target == tmp_path / "run" / "config.toml"
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.toml"]
    assert load_config(target) == config


def test_config_is_frozen(write_config, run_toml):
    config = load_config(write_config(run_toml()))
    with pytest.raises(ValidationError):
        config.network.dim = 4  # type: ignore[misc]
    assert config.model_copy(update={"network": config.network.model_copy(update={"dim": 4})}).network.dim == 4


def test_parse_cli_reads_config_flag_and_overrides(write_config, run_toml):
    path = write_config(run_toml(network="dim = 8"))
    assert parse_cli(["--config", str(path), "--network_dim", "12"]).network.dim == 12
    assert parse_cli([f"--config={path}"]).network.dim == 8
    assert parse_cli(["--network_dim", "2", "--config_file", str(path)]).network.dim == 2


def test_parse_cli_errors_are_config_errors(write_config, run_toml):
    path = write_config(run_toml())
    with pytest.raises(ConfigError) as caught:
        parse_cli(["--config", str(path), "--network_dim", "0"])
    assert str(caught.value) == "--network_dim: network.dim: must be >= 1 (got 0)"
    with pytest.raises(ConfigError, match="--config: needs the path of a .toml file"):
        parse_cli(["--config"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_cli(["--config", str(path), "--config", str(path)])


def test_parse_cli_help_lists_options_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as caught:
        parse_cli(["--help"], "train_network.py")
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: train_network.py")
    assert "--network.dim = 16 [--network_dim]" in out
    assert "Rank of the adapter matrices (at most 1024)." in out


def test_exit_on_config_error_prints_message_and_exits_2(write_config, run_toml, capsys):
    path = write_config(run_toml(network="dim = 0"))

    @exit_on_config_error()
    def main() -> None:
        parse_cli(["--config", str(path)])

    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 2
    assert capsys.readouterr().err == f"{path}: network.dim: must be >= 1 (got 0)\n"


def test_deepspeed_from_a_section_or_sd_scripts_flat_keys(write_config, run_toml):
    section = 'enabled = true\nzero_stage = 3\noffload_param_device = "cpu"'
    sectioned = load_config(write_config(run_toml(deepspeed=section)))
    assert sectioned.deepspeed.enabled and sectioned.deepspeed.zero_stage == 3
    assert sectioned.deepspeed.offload_param_device == "cpu"
    flat = load_config(write_config(run_toml(top="deepspeed = true\nzero_stage = 1")))
    assert flat.deepspeed.enabled and flat.deepspeed.zero_stage == 1  # a flat name that is also a section name
    assert not load_config(write_config(run_toml())).deepspeed.enabled


def test_deepspeed_offload_needs_the_stage_that_partitions_it(write_config, run_toml):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(run_toml(deepspeed='enabled = true\nzero_stage = 2\noffload_param_device = "cpu"')))
    assert "deepspeed.offload_param_device: needs deepspeed.zero_stage = 3" in str(caught.value)
