"""The flat sd-scripts / kohya_ss names and where they live in the sectioned schema.

`FLAT_ALIASES` is the one table of plain renames (flat name -> dotted path); other modules reuse it, e.g. to
write `ss_*` metadata. `TRANSFORMS` holds the few sd-scripts keys whose *value* must be translated too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

_SAME_NAME: dict[str, tuple[str, ...]] = {
    "model": ("pretrained_model_name_or_path", "vae", "clip_skip", "ae", "clip_l", "t5xxl", "fp8_base"),
    "dataset": (
        "train_data_dir", "reg_data_dir", "dataset_config", "resolution", "enable_bucket", "min_bucket_reso",
        "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale", "caption_extension", "shuffle_caption",
        "keep_tokens", "keep_tokens_separator", "caption_prefix", "caption_suffix", "caption_dropout_rate",
        "caption_tag_dropout_rate", "flip_aug", "color_aug", "random_crop", "prior_loss_weight", "masked_loss",
        "cache_latents", "cache_latents_to_disk", "cache_text_encoder_outputs", "validation_split", "max_token_length",
    ),
    "network": ("network_weights", "unet_lr", "text_encoder_lr"),
    "optimizer": (
        "learning_rate", "lr_scheduler", "lr_warmup_steps", "lr_scheduler_num_cycles", "lr_scheduler_power",
        "max_grad_norm",
    ),
    "training": (
        "max_train_steps", "max_train_epochs", "seed", "mixed_precision", "gradient_accumulation_steps",
        "gradient_checkpointing", "noise_offset", "multires_noise_iterations", "multires_noise_discount",
        "min_snr_gamma", "loss_type", "huber_c", "resume", "skip_memory_check",
    ),
    "flow_matching": (
        "timestep_sampling", "sigmoid_scale", "discrete_flow_shift", "model_prediction_type", "weighting_scheme",
        "logit_mean", "logit_std", "mode_scale", "guidance_scale", "t5xxl_max_token_length",
    ),
    "dreambooth": (
        "train_method", "instance_prompt", "class_prompt", "class_data_dir", "num_class_images", "train_text_encoder",
        "stop_text_encoder_training", "use_ema", "save_diffusers",
    ),
    "textual_inversion": (
        "token_string", "init_word", "num_vectors_per_token", "embedding_lr", "embedding_file", "use_object_template",
        "use_style_template",
    ),
    "deepspeed": (
        "zero_stage", "offload_optimizer_device", "offload_optimizer_nvme_path", "offload_param_device",
        "offload_param_nvme_path",
    ),
    "output": (
        "output_dir", "output_name", "save_precision", "save_every_n_epochs", "save_every_n_steps", "save_state",
        "save_state_on_train_end", "training_comment",
    ),
}

_RENAMED: dict[str, str] = {
    "deepspeed": "deepspeed.enabled",
    "train_batch_size": "dataset.batch_size",
    "max_data_loader_n_workers": "dataset.num_workers",
    "network_dim": "network.dim",
    "network_alpha": "network.alpha",
    "network_dropout": "network.dropout",
    "network_train_unet_only": "network.train_unet_only",
    "network_train_text_encoder_only": "network.train_text_encoder_only",
    "network_ema_decay": "network.ema_decay",
    "network_ema_update_every": "network.ema_update_every",
    "network_ema_warmup": "network.ema_warmup",
    "network_ema_save": "network.ema_save",
    "optimizer_type": "optimizer.type",
    "validate_every_n_steps": "training.validation_every_n_steps",
    "sample_prompts": "sample.prompts",
    "sample_every_n_steps": "sample.every_n_steps",
    "sample_every_n_epochs": "sample.every_n_epochs",
    "sample_at_first": "sample.at_first",
    "sample_sampler": "sample.sampler",
    "sample_use_ema": "sample.use_ema",
    "vae_batch_size": "training.latents_per_encode",
    "compare_at_end": "sample.compare_at_end",
    "compare_strengths": "sample.compare_strengths",
    "save_last_n_epochs": "output.save_last_n",
    "save_last_n_steps": "output.save_last_n",
    "logging_dir": "logging.log_dir",
}

FLAT_ALIASES: dict[str, str] = {
    **{name: f"{section}.{name}" for section, names in _SAME_NAME.items() for name in names},
    **_RENAMED,
}

# Former spellings, still read: each use logs a warning naming the key to write instead.
DEPRECATED_KEYS: dict[str, str] = {
    "network": "dreambooth.train_method",  # read as the [network] (LoRA adapter) section
    "dreambooth.network": "dreambooth.train_method",
}

# sd-scripts performance switches with no effect on the result here; accepted so existing files run.
IGNORED_KEYS: frozenset[str] = frozenset(
    {"xformers", "sdpa", "mem_eff_attn", "lowram", "highvram", "persistent_data_loader_workers"}
)

# sd-scripts switches for what Furnace does not train: false is accepted (the default there), true is refused with
# the reason, rather than as an unknown key whose closest name is another option.
REFUSED_SWITCHES: dict[str, str] = {
    "train_t5xxl": "FLUX.1's T5-XXL always stays frozen here (a LoRA or dreambooth.train_text_encoder trains CLIP-L at "
    "most); remove it",
}

# sd-scripts selects the family with boolean switches; v_parameterization on top of v2 means SD2-v.
FAMILY_FLAGS: dict[str, str] = {"v2": "sd2", "v_parameterization": "sd2-v", "sdxl": "sdxl"}


def family_from_flags(flags: set[str]) -> str:
    """Combine the family switches set to true in one file or command line into one family name."""
    if "sdxl" in flags and flags & {"v2", "v_parameterization"}:
        raise ValueError("sdxl cannot be combined with v2 / v_parameterization")
    if "v_parameterization" in flags:
        return "sd2-v"
    return FAMILY_FLAGS[next(iter(flags))]


def _key_values(value: Any) -> dict[str, Any]:
    """Parse sd-scripts 'key=value' lists (values are Python literals, e.g. 'betas=0.9,0.99')."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and "=" in item for item in items):
        raise ValueError(f"expected a list of 'key=value' strings (got {value!r})")
    parsed: dict[str, Any] = {}
    for item in items:
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            parsed[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            parsed[key] = raw
        if isinstance(parsed[key], tuple):
            parsed[key] = list(parsed[key])
    return parsed


_NETWORK_ARGS = {
    "conv_dim": "network.conv_dim",
    "conv_alpha": "network.conv_alpha",
    "conv_rank": "network.conv_dim",
    "algo": "network.module",
    "factor": "network.lokr_factor",
    "full_matrix": "network.lokr_full_matrix",
    "train_blocks": "network.train_blocks",
    "train_double_block_indices": "network.train_double_block_indices",
    "train_single_block_indices": "network.train_single_block_indices",
}
# LyCORIS algo names (network_module = "lycoris.kohya") -> network.module; its "lora"/"locon" is the kohya LoRA.
_ALGOS = {"lokr": "lokr", "lora": "lora", "locon": "lora"}


def _algo(value: Any) -> str:
    if isinstance(value, str) and value.lower() in _ALGOS:
        return _ALGOS[value.lower()]
    raise ValueError(f"algo must be one of {', '.join(map(repr, _ALGOS))} (got {value!r})")


def _network_args(value: Any) -> dict[str, Any]:
    parsed = _key_values(value)
    unsupported = sorted(set(parsed) - set(_NETWORK_ARGS))
    if unsupported:
        raise ValueError(f"unsupported key(s) {', '.join(unsupported)}; supported: {', '.join(_NETWORK_ARGS)}")
    if "algo" in parsed:
        parsed["algo"] = _algo(parsed["algo"])
    return {_NETWORK_ARGS[key]: item for key, item in parsed.items()}


_OPTIMIZER_FIELDS = ("weight_decay", "betas", "eps", "momentum")


def _optimizer_args(value: Any) -> dict[str, Any]:
    parsed = _key_values(value)
    mapped = {f"optimizer.{key}": parsed.pop(key) for key in _OPTIMIZER_FIELDS if key in parsed}
    if parsed:
        mapped["optimizer.args"] = parsed
    return mapped


def _network_module(value: Any) -> dict[str, Any]:
    if value in ("networks.lora", "networks.lora_flux", "lora"):
        return {"network.module": "lora"}
    if value == "lycoris.kohya":
        return {}  # the adapter type comes from network_args' algo, LoRA when it is absent
    raise ValueError(
        f"only 'networks.lora', 'networks.lora_flux' and 'lycoris.kohya' are supported (got {value!r}); use "
        "network.conv_dim for LoCon"
    )


def _save_model_as(value: Any) -> dict[str, Any]:
    if value == "safetensors":
        return {}
    raise ValueError(f"only 'safetensors' is supported (got {value!r})")


def _log_with(value: Any) -> dict[str, Any]:
    if value in ("tensorboard", "all"):
        return {"logging.tensorboard": True}
    raise ValueError(f"only 'tensorboard' is supported (got {value!r})")


# Name -> (CLI kind, value translator). "list" takes every following CLI token, "str" keeps the raw text.
TRANSFORMS: dict[str, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    "network_args": ("list", _network_args),
    "optimizer_args": ("list", _optimizer_args),
    "network_module": ("str", _network_module),
    "save_model_as": ("str", _save_model_as),
    "log_with": ("str", _log_with),
}
