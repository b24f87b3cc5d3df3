"""DeepSpeed ZeRO through accelerate: the plugin, and the few places where the loop must treat an engine specially.

DeepSpeed is on when the config says so (``[deepspeed] enabled = true``, stage and offload from the same section) or
when the run was started with ``accelerate launch --use_deepspeed`` (stage and offload from the launcher). The fields
DeepSpeed needs from the run (micro batch size, accumulation, clipping) come from the Furnace config, because the loop
feeds batches itself rather than through a prepared DataLoader.

How the loop runs under an engine:
- everything that trains (UNet and/or text encoders) is wrapped in one container module, so one engine holds all
  trained parameters; the loop keeps calling the original modules (ZeRO-3's fetch hooks sit on every submodule);
- the loop's own accumulation windows (which never cross an epoch boundary) mark the engine's step boundary
  explicitly, and the loss is scaled by the loop, not by the engine;
- under ZeRO-3 the weights are partitioned across ranks, so saving gathers the saved tensors on every rank first;
- resumable state is the engine's own checkpoint (trainable tensors + partitioned optimizer state).

On a CPU-only machine DeepSpeed still runs (gloo); accelerate must then not be forced to CPU mode, which would silently
bypass DeepSpeed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

import torch

from library.config import ConfigError, FurnaceConfig
from library.training.deepspeed_ops import use_venv_ops
from library.training.exceptions import TrainingSetupError

logger = logging.getLogger(__name__)

OFFLOAD_OPTIMIZERS = ("AdamW",)
"""accelerate replaces the optimizer by DeepSpeed's CPU Adam when the optimizer is offloaded; only AdamW maps onto
it."""


def launched_with_deepspeed() -> bool:
    """True under ``accelerate launch --use_deepspeed`` (or an accelerate config with DeepSpeed as its type)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def deepspeed_requested(config: FurnaceConfig) -> bool:
    return config.deepspeed.enabled or launched_with_deepspeed()


def _plugin_settings(config: FurnaceConfig) -> dict:
    """Stage and offload from the config when it enables DeepSpeed; otherwise accelerate reads the launcher's."""
    if not config.deepspeed.enabled:
        return {}
    section = config.deepspeed
    return {
        "zero_stage": section.zero_stage,
        "offload_optimizer_device": section.offload_optimizer_device,
        "offload_optimizer_nvme_path": section.offload_optimizer_nvme_path or "none",
        "offload_param_device": section.offload_param_device,
        "offload_param_nvme_path": section.offload_param_nvme_path or "none",
    }


def _check(config: FurnaceConfig, plugin) -> None:
    """Refuse what the engine would silently change (config errors) or cannot run here, before any model loads."""
    zero = plugin.deepspeed_config.get("zero_optimization", {})
    offload_optimizer = zero.get("offload_optimizer", {}).get("device", "none")
    if offload_optimizer not in (None, "none") and config.optimizer.type not in OFFLOAD_OPTIMIZERS:
        raise ConfigError([
            f"DeepSpeed optimizer offload runs DeepSpeed's own CPU Adam in place of optimizer.type = "
            f"{config.optimizer.type!r}; use optimizer.type = \"AdamW\" or "
            "deepspeed.offload_optimizer_device = \"none\""
        ])
    if plugin.zero_stage == 3 and config.dreambooth.use_ema and config.dreambooth.train_method == "full":
        raise ConfigError([
            "DeepSpeed ZeRO-3 partitions the UNet weights across processes, which the EMA copy cannot follow; "
            "set dreambooth.use_ema = false or deepspeed.zero_stage = 2"
        ])
    if plugin.zero_stage == 3 and config.network.ema_decay:
        raise ConfigError([
            "DeepSpeed ZeRO-3 partitions the adapter weights across processes, which the EMA cannot follow; "
            "set network.ema_decay = 0 or deepspeed.zero_stage = 2"
        ])
    if plugin.zero_stage == 3 and config.sample.compare_at_end:
        raise ConfigError([
            "DeepSpeed ZeRO-3: sample.compare_at_end renders on the main process only, which the partitioned "
            "weights cannot serve; set it to false (run `python -m library.tools compare` on the output folder "
            "afterwards) or use deepspeed.zero_stage = 2"
        ])
    if "nvme" in (offload_optimizer, zero.get("offload_param", {}).get("device", "none")):
        from deepspeed.ops.op_builder import AsyncIOBuilder

        if not AsyncIOBuilder().is_compatible(verbose=False):
            raise TrainingSetupError(
                "DeepSpeed NVMe offload needs DeepSpeed's async I/O extension (libaio development files and a "
                "compiler); install them or offload to \"cpu\" instead"
            )


def _single_process_rendezvous() -> None:
    """A run started with plain ``python`` gets the one-process group ``accelerate launch`` would have set up."""
    if "WORLD_SIZE" in os.environ:
        return
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    logger.info("DeepSpeed in one process; start with `accelerate launch --num_processes N` to use N devices")


def build_deepspeed_plugin(config: FurnaceConfig):
    """The ``DeepSpeedPlugin`` for this run, or None when DeepSpeed is not requested."""
    if not deepspeed_requested(config):
        return None
    use_venv_ops()  # before DeepSpeed loads any op: the ones setup built, not a rebuild
    try:
        from accelerate.utils import DeepSpeedPlugin
        import deepspeed  # noqa: F401  (fail here, with the fix, rather than deep inside accelerate)
    except ImportError:
        raise TrainingSetupError(
            "DeepSpeed is not installed; install the 'distributed' extra (pip install -e '.[distributed]') or set "
            "deepspeed.enabled = false"
        ) from None
    plugin = DeepSpeedPlugin(
        gradient_accumulation_steps=config.training.gradient_accumulation_steps,
        gradient_clipping=config.optimizer.max_grad_norm,
        zero3_init_flag=False,  # the base model is loaded whole, then partitioned by the engine
        **_plugin_settings(config),
    )
    _check(config, plugin)
    _single_process_rendezvous()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    settings = plugin.deepspeed_config
    if settings.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        settings["train_micro_batch_size_per_gpu"] = config.dataset.batch_size
    if settings.get("train_batch_size", "auto") == "auto":
        settings["train_batch_size"] = (
            settings["train_micro_batch_size_per_gpu"] * config.training.gradient_accumulation_steps * world
        )
    return plugin


def uses_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator) -> int:
    """The ZeRO stage of this run; 0 without DeepSpeed."""
    return accelerator.state.deepspeed_plugin.zero_stage if uses_deepspeed(accelerator) else 0


class TrainedModules(torch.nn.Module):
    """One module holding every trained module, so one DeepSpeed engine owns all trained parameters."""

    def __init__(self, modules: Iterable[torch.nn.Module]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)

    def forward(self, *args, **kwargs):
        raise RuntimeError("TrainedModules is a container; call its parts")


def partitioned_weights_read_early(modules: Iterable[torch.nn.Module]) -> None:
    """ZeRO-3 fetches a module's weights when that module runs; CLIP's embeddings read the size of their position
    table before calling it, so that table is also fetched whenever its parent runs."""
    import deepspeed

    for module in modules:
        for parent in module.modules():
            table = getattr(parent, "position_embedding", None)
            if isinstance(table, torch.nn.Embedding):
                deepspeed.zero.register_external_parameter(parent, table.weight)


def backward(accelerator, loss: torch.Tensor, closes_window: bool) -> None:
    """Backward of one micro-batch; under DeepSpeed the engine steps only when ``closes_window``."""
    if uses_deepspeed(accelerator):
        from deepspeed.runtime.base_optimizer import ZeROOptimizer

        engine = accelerator.deepspeed_engine_wrapped.engine
        if isinstance(engine.optimizer, ZeROOptimizer):
            # What engine.forward does first, and the loop calls the modules directly: it advances ZeRO's
            # micro-step counter, without which ZeRO-3 overwrites instead of accumulating gradients.
            engine.optimizer.clear_backward_seen_flag()
        accelerator.deepspeed_engine_wrapped.backward(loss, sync_gradients=closes_window, scale_wrt_gas=False)
    else:
        accelerator.backward(loss)


def gathered(accelerator, parameters: Iterable[torch.nn.Parameter]) -> contextlib.AbstractContextManager:
    """Inside the context the parameters hold their full values on every rank (ZeRO-3 partitions them otherwise).
    Every rank must enter it: gathering is collective."""
    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(parameters), modifier_rank=None)


def state_save_options(accelerator) -> dict:
    """The engine checkpoint keeps trainable tensors only (the frozen base is in the model file already)."""
    return {"exclude_frozen_parameters": True} if uses_deepspeed(accelerator) else {}


def state_load_options(accelerator) -> dict:
    return {"load_module_strict": False} if uses_deepspeed(accelerator) else {}


def continue_cpu_adam_powers(accelerator) -> None:
    """After a resume, bring DeepSpeed's CPU Adam to the bias-correction powers the uninterrupted run has.

    Its C++ side keeps beta1^t and beta2^t in float32, multiplied by beta once per step; a new optimizer (a resumed
    run) computes them with pow() at the restored step instead, which rounds differently at some steps (beta2 =
    0.999 at t = 3) and moves the resumed run off the uninterrupted one. Replaying the restored steps on one-element
    stand-ins advances the C++ counter exactly as the steps did (microseconds per step)."""
    if not uses_deepspeed(accelerator):
        return
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    adam = accelerator.deepspeed_engine_wrapped.engine.basic_optimizer
    if not isinstance(adam, DeepSpeedCPUAdam):
        return
    steps = max((int(state["step"]) for state in adam.state.values() if "step" in state), default=0)
    stand_in = [torch.zeros(1) for _ in range(4)]  # parameter, gradient, both moments
    for step in range(1, steps + 1):
        for group in adam.param_groups:  # as step() calls it: once per group, with that group's betas
            beta1, beta2 = group["betas"]
            adam.ds_opt_adam.adam_update(adam.opt_id, step, group["lr"], beta1, beta2, group["eps"],
                                         group["weight_decay"], group["bias_correction"], *stand_in)
