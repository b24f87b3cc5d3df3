"""The checkpoint tools stream: their peak memory does not grow with the model; the file tools start without
peft or bitsandbytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open
from tool_helpers import make_lora_file
from trainer_cli import run_python

from library.models.families import SD1
from library.models.pipeline import component_configs, component_modules
from library.models.single_file import save_original_checkpoint
from library.models.tiny import build_components, component_state_dicts, tiny_configs

pytestmark = pytest.mark.slow  # these tests start processes or trainers

# Runs the tools CLI and prints its peak resident memory in KiB last on stderr. VmHWM belongs to the process's own
# memory map; ru_maxrss would not do: a child's starts at the RSS of the (large) test process that forked it.
_PEAK = (
    "import sys; from pathlib import Path; from library.tools.__main__ import main; code = main(sys.argv[1:]); "
    "status = Path('/proc/self/status').read_text().splitlines(); "
    "print(next(line for line in status if line.startswith('VmHWM:')).split()[1], file=sys.stderr); sys.exit(code)"
)


def peak_rss(*args: object) -> int:
    """Peak RSS in bytes of ``python -m library.tools ARGS`` run in a fresh process."""
    result = run_python(["-c", _PEAK, *map(str, args)], "tool", env={"OMP_NUM_THREADS": "1"})
    return int(result.stderr.strip().splitlines()[-1]) * 1024


@pytest.fixture(scope="module")
def wide_sd1(tmp_path_factory) -> Path:
    """An SD1 single file of about 320 MB (the tiny model with a six times wider UNet; the same text encoder)."""
    configs = tiny_configs(SD1)
    configs["unet"]["block_out_channels"] = [192, 384, 384]
    components = build_components(SD1, configs, seed=0)
    modules = component_modules(SD1, components.unet, components.vae, components.text_encoders)
    path = tmp_path_factory.mktemp("wide") / "wide.safetensors"
    save_original_checkpoint(path, "sd1", component_state_dicts(SD1, components), component_configs(modules))
    return path


@pytest.mark.parametrize("tool", ["merge-into", "merge-models"])
def test_peak_memory_does_not_grow_with_the_model(tiny_sd1, wide_sd1, tmp_path, tool):
    lora = make_lora_file("sd1", tmp_path / "te.safetensors", train_text_encoder_only=True)  # fits both models

    def peak(model: Path) -> int:
        inputs = [model, lora] if tool == "merge-into" else [model, model, "--alpha", "0.3"]
        out = tmp_path / f"{model.stem}-out.safetensors"
        measured = peak_rss(tool, *inputs, "--save-precision", "float", "--out", out)
        with safe_open(str(out), framework="pt") as handle:
            assert len(list(handle.keys())) == len(list(safe_open(str(model), framework="pt").keys()))
        return measured

    small, large = peak(tiny_sd1.single_file), peak(wide_sd1)
    size = wide_sd1.stat().st_size
    # holding the model (let alone the output too) would add at least `size`; streaming adds a few tensors
    assert large - small < 0.15 * size, f"{tool}: {small / 2**20:.0f} MiB -> {large / 2**20:.0f} MiB"


def _imported_modules(*args: str) -> set[str]:
    result = run_python(["-X", "importtime", "-m", "library.tools", *args], "tool", env={"OMP_NUM_THREADS": "1"})
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip() for line in lines}


def test_file_tools_start_without_peft_or_bitsandbytes(lora_factory, tmp_path):
    started = _imported_modules("inspect", "--help")
    assert "library.tools.merge_into" in started  # the dispatcher imports every tool
    lora, out = lora_factory("sd1", "a"), tmp_path / "r.safetensors"
    resized = _imported_modules("resize", str(lora), "--rank", "2", "--out", str(out))
    for imported in (started, resized):
        assert not {"peft", "bitsandbytes"} & imported


def test_checkpoint_tools_do_not_print_the_bitsandbytes_warning(tiny_sd1, lora_factory, tmp_path):
    # diffusers' model classes import bitsandbytes when it is installed; its CPU-kernel warning is silenced
    result = run_python(
        ["-m", "library.tools", "merge-into", str(tiny_sd1.single_file), str(lora_factory("sd1", "a")), "--out",
         str(tmp_path / "m.safetensors")],
        "tool",
        env={"OMP_NUM_THREADS": "1"},
        fresh=True,  # the warning is printed while importing
    )
    assert "wrote" in result.stdout
    assert "kernels-community" not in result.stderr and "gemm_4bit" not in result.stderr
