"""Bad configs fail with one line naming the file or flag, the key path, the expectation and the value."""

from __future__ import annotations

import re

import pytest

from library.config import ConfigError, load_config

# (id, run_toml keyword arguments, fragments that must all appear on the single error line)
BAD_FILES = [
    ("rank-zero", {"network": "dim = 0"}, ["network.dim: must be >= 1", "(got 0)"]),
    ("rank-text", {"network": 'dim = "big"'}, ["network.dim: must be an integer", "(got 'big')"]),
    ("alpha-flat", {"top": "network_alpha = 0"}, ["network.alpha (from network_alpha): must be > 0", "(got 0)"]),
    (
        "optimizer-enum",
        {"optimizer": 'type = "Adam"'},
        ["optimizer.type: must be one of", "'AdamW8bit'", "(got 'Adam')"],
    ),
    ("lr-negative", {"optimizer": "learning_rate = -1e-4"}, ["optimizer.learning_rate: must be > 0", "(got -0.0001)"]),
    ("betas-range", {"optimizer": "betas = [0.9, 1.2]"}, ["optimizer.betas: each beta must be in [0, 1)", "1.2"]),
    ("args-not-table", {"optimizer": "args = 5"}, ["optimizer.args: must be a table", "(got 5)"]),
    (
        "args-nested",
        {"optimizer": "args = { a = { b = 1 } }"},
        ["optimizer.args: 'a' must be a boolean, number, string or a list of them"],
    ),
    (
        "warmup-on-constant",
        {"optimizer": 'lr_scheduler = "constant"\nlr_warmup_steps = 10'},
        ["optimizer.lr_warmup_steps: is ignored by the 'constant' scheduler", "constant_with_warmup"],
    ),
    (
        "resolution-odd",
        {"dataset": "resolution = 100"},
        ["dataset.resolution: each side must be a multiple of 8", "(got 100)"],
    ),
    (
        "resolution-word",
        {"dataset": 'resolution = "wide"'},
        ["dataset.resolution: expected an integer, 'W,H' or [W, H]", "(got 'wide')"],
    ),
    (
        "bucket-order",
        {"dataset": "min_bucket_reso = 1024\nmax_bucket_reso = 512"},
        ["dataset.min_bucket_reso: must be <= dataset.max_bucket_reso", "1024 > 512"],
    ),
    (
        "dropout-rate",
        {"dataset": "caption_dropout_rate = 1.5"},
        ["dataset.caption_dropout_rate: must be <= 1", "(got 1.5)"],
    ),
    (
        "validation-split",
        {"dataset": "validation_split = 0.9"},
        ["dataset.validation_split: must be <= 0.5", "(got 0.9)"],
    ),
    (
        "cache-vs-color-aug",
        {"dataset": "cache_latents = true\ncolor_aug = true"},
        ["dataset.cache_latents: cannot be combined with color_aug"],
    ),
    (
        "token-length",
        {"dataset": "max_token_length = 100"},
        ["dataset.max_token_length: must be one of 75, 150 or 225", "(got 100)"],
    ),
    ("clip-skip", {"model": "clip_skip = 13"}, ["model.clip_skip: must be <= 12", "(got 13)"]),
    ("family", {"model": 'family = "sd3"'}, ["model.family: must be one of 'auto'", "(got 'sd3')"]),
    ("model-missing", {"model": None}, ["model.pretrained_model_name_or_path: is required"]),
    ("data-missing", {"dataset": None}, ["dataset.train_data_dir: is required (or set dataset.dataset_config)"]),
    (
        "unet-and-te-only",
        {"network": "train_unet_only = true\ntrain_text_encoder_only = true"},
        ["network.train_text_encoder_only: cannot be combined with network.train_unet_only"],
    ),
    ("conv-alpha-alone", {"network": "conv_alpha = 4"}, ["network.conv_alpha: needs network.conv_dim"]),
    (
        "cached-text-encoder-fine-tuned",
        {"network": "train_unet_only = true", "dreambooth": "train_text_encoder = true",
         "top": "cache_text_encoder_outputs = true"},
        ["dataset.cache_text_encoder_outputs (from cache_text_encoder_outputs): cannot be combined with "
         "dreambooth.train_text_encoder (a cached text encoder cannot train)"],
    ),
    (
        "precision",
        {"training": 'mixed_precision = "fp32"'},
        ["training.mixed_precision: must be one of 'no', 'fp16' or 'bf16'", "(got 'fp32')"],
    ),
    (
        "bool-text",
        {"training": 'gradient_checkpointing = "maybe"'},
        ["training.gradient_checkpointing: must be true or false", "(got 'maybe')"],
    ),
    ("sampler", {"sample": 'sampler = "magic"'}, ["sample.sampler: must be one of", "(got 'magic')"]),
    (
        "output-name-path",
        {"output": 'output_name = "a/b"'},
        ["output.output_name: must be a file name stem", "(got 'a/b')"],
    ),
    ("section-not-table", {"top": "optimizer = 5"}, ["optimizer: must be a [optimizer] table of options", "(got 5)"]),
    (
        "flat-name-of-a-section",
        {"top": "deepspeed = 5"},
        ["deepspeed.enabled (from deepspeed): must be true or false", "(got 5)"],
    ),
    ("family-switches", {"top": "v2 = true\nsdxl = true"}, ["v2/sdxl: sdxl cannot be combined with v2"]),
    (
        "network-module",
        {"top": 'network_module = "networks.oft"'},
        ["network_module: only 'networks.lora', 'networks.lora_flux' and 'lycoris.kohya' are supported", "(got 'networks.oft')"],
    ),
    (
        "lokr-dora",
        {"network": 'module = "lokr"\nuse_dora = true'},
        ["network.use_dora: cannot be combined with network.module = 'lokr'"],
    ),
    (
        "lokr-dropout",
        {"network": 'module = "lokr"\ndropout = 0.1'},
        ["network.dropout: is not applied by LoKr adapters"],
    ),
    ("lokr-factor-on-lora", {"network": "lokr_factor = 4"}, ["network.lokr_factor: needs network.module = 'lokr'"]),
    (
        "lokr-full-matrix-on-lora",
        {"network": "lokr_full_matrix = true"},
        ["network.lokr_full_matrix: needs network.module = 'lokr'"],
    ),
    (
        "lokr-factor-zero",
        {"network": 'module = "lokr"\nlokr_factor = 0'},
        ["network.lokr_factor: must be -1 (automatic) or >= 1 (got 0)"],
    ),
    ("network-module-enum", {"network": 'module = "loha"'}, ["network.module: must be one of", "(got 'loha')"]),
    (
        "lycoris-algo",
        {"top": 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=loha"]'},
        ["network_args: algo must be one of 'lokr', 'lora', 'locon' (got 'loha')"],
    ),
    (
        "algo-against-module",
        {"top": 'network_module = "networks.lora"\nnetwork_args = ["algo=lokr"]'},
        ["network.module: set twice (as 'network_module' and 'network_args')"],
    ),
    ("save-model-as", {"top": 'save_model_as = "ckpt"'}, ["save_model_as: only 'safetensors' is supported"]),
    (
        "set-twice",
        {"top": "network_dim = 4", "network": "dim = 8"},
        ["network.dim: set twice (as 'network_dim' and 'network.dim')"],
    ),
]


def _one_error(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    lines = str(caught.value).splitlines()
    assert lines == caught.value.messages
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("kwargs", "fragments"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES]
)
def test_bad_file_names_file_key_and_expectation_on_one_line(write_config, run_toml, kwargs, fragments):
    path = write_config(run_toml(**kwargs))
    line = _one_error(path)
    assert line.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in line


BAD_OVERRIDES = [
    (["--network_dim", "0"], "--network_dim: network.dim: must be >= 1 (got 0)"),
    (
        ["--training.max_train_steps=abc"],
        "--training.max_train_steps: training.max_train_steps: must be an integer (got 'abc')",
    ),
    (["--learning_rate", "0"], "--learning_rate: optimizer.learning_rate: must be > 0 (got 0)"),
    (
        ["--resolution", "512x512"],
        "--resolution: dataset.resolution: expected an integer, 'W,H' or [W, H] (got '512x512')",
    ),
    (["--optimizer_type", "adamx"], "--optimizer_type: optimizer.type: must be one of"),
    (
        ["--mixed_precision", "fp8"],
        "--mixed_precision: training.mixed_precision: must be one of 'no', 'fp16' or 'bf16' (got 'fp8')",
    ),
    (["--network_dimm", "4"], "--network_dimm: unknown option — did you mean '--network_dim'?"),
    (["--netwrk.dim", "4"], "--netwrk.dim: unknown option — did you mean '--network.dim'?"),
    (["--learning_rate"], "--learning_rate: needs a value"),
    (["stray"], "stray: unexpected argument"),
    (["--network_args", "rank_dropout=0.1"], "--network_args: network_args: unsupported key(s) rank_dropout"),
    (["--network_args", "train_single_block_indices=4-2"],
     "--network_args: network.train_single_block_indices: range '4-2' ends before it starts (got '4-2')"),
    (["--network.train_double_block_indices", "0;1"], "--network.train_double_block_indices: "
     "network.train_double_block_indices: expected 'all', 'none' or indices and ranges such as '0,1,8-12'"),
    (["--sdxl", "--v2"], "--sdxl: sdxl/v2: sdxl cannot be combined with v2"),
    (["--gradient_checkpointing", "maybe"], "maybe: unexpected argument"),
    (["--train_t5xxl"], "--train_t5xxl: train_t5xxl: FLUX.1's T5-XXL always stays frozen here"),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), BAD_OVERRIDES, ids=[case[1].split(":")[0] for case in BAD_OVERRIDES]
)
def test_bad_override_names_the_flag(write_config, run_toml, overrides, expected):
    line = _one_error(write_config(run_toml()), overrides)
    assert line.startswith(expected)


UNKNOWN_KEYS = [
    ({"network": "dimm = 4"}, "unknown key 'network.dimm' — did you mean 'network.dim'?"),
    ({"network": "network_dim = 4"}, "unknown key 'network.network_dim' — did you mean 'network.dim'?"),
    ({"optimizer": "unet_lr = 1e-4"}, "unknown key 'optimizer.unet_lr' — did you mean 'network.unet_lr'?"),
    ({"top": "network_dimm = 4"}, "unknown key 'network_dimm' — did you mean 'network_dim'?"),
    ({"top": "dim = 4"}, "unknown key 'dim' — did you mean 'network.dim'?"),
    ({"netwrok": "dim = 4"}, "unknown key 'netwrok' — did you mean 'network'?"),
    ({"training": "batch_size = 2"}, "unknown key 'training.batch_size' — did you mean 'dataset.batch_size'?"),
]


@pytest.mark.parametrize(("kwargs", "expected"), UNKNOWN_KEYS)
def test_unknown_keys_suggest_the_closest_name(write_config, run_toml, kwargs, expected):
    path = write_config(run_toml(**kwargs))
    assert _one_error(path) == f"{path}: {expected}"


def test_sd_scripts_train_t5xxl_is_refused_when_true_and_accepted_when_false(write_config, run_toml):
    """sd-scripts' switch for training T5: its reason, not 'did you mean t5xxl' (the T5 file's option)."""
    path = write_config(run_toml(top="train_t5xxl = true"))
    assert _one_error(path) == (f"{path}: train_t5xxl: FLUX.1's T5-XXL always stays frozen here (a LoRA or "
                                "dreambooth.train_text_encoder trains CLIP-L at most); remove it")
    assert load_config(write_config(run_toml(top="train_t5xxl = false"))).model.t5xxl is None


def test_unknown_key_without_a_close_name_has_no_suggestion(write_config, run_toml):
    path = write_config(run_toml(network="zzzz = 1"))
    assert _one_error(path) == f"{path}: unknown key 'network.zzzz'"


def test_several_problems_give_one_line_each(write_config, run_toml):
    path = write_config(run_toml(network="dim = 0\nalpha = -1", optimizer='type = "Adam"', top="seed = -5"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["--max_train_steps", "0"])
    lines = str(caught.value).splitlines()
    assert len(lines) == 5
    assert sum(line.startswith(f"{path}: ") for line in lines) == 4
    assert any(line.startswith("--max_train_steps: training.max_train_steps: must be >= 1") for line in lines)
    assert any("training.seed (from seed): must be >= 0 (got -5)" in line for line in lines)


def test_toml_syntax_error_names_file_line_and_column(write_config):
    path = write_config('[model]\npretrained_model_name_or_path = "m"\n[network]\ndim = = 4\n')
    line = _one_error(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: line 4, column \d+: invalid TOML: .+", line), line


def test_missing_file_says_so(tmp_path):
    path = tmp_path / "absent.toml"
    assert _one_error(path) == f"{path}: config file not found"


def test_dataset_toml_passed_as_run_config_gets_a_hint(write_config):
    path = write_config('[general]\nshuffle_caption = true\n[[datasets]]\nresolution = 512\n', "dataset.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    first = str(caught.value).splitlines()[0]
    hint = f"set dataset.dataset_config = '{path}' in a run config instead"
    assert first == f"{path}: this looks like an sd-scripts dataset TOML: {hint}"
