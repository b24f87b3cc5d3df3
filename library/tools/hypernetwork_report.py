"""What ``inspect`` says about a hypernetwork file (A1111 ``.pt`` or its ``.safetensors`` form)."""

from __future__ import annotations

from pathlib import Path

from library.networks.hypernetwork_file import read_hypernetwork

# A1111 keys a hypernetwork by its context width, which names the family it was trained for.
_FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_SHOWN = ("name", "step", "sd_checkpoint", "sd_checkpoint_name", "optional_info")


def hypernetwork_report(path: Path) -> dict[str, object]:
    read = read_hypernetwork(path)
    families = sorted({_FAMILY_BY_WIDTH.get(width, "unknown") for width in read.pairs})
    options = read.options
    return {
        "file": str(path),
        "type": "hypernetwork",
        "family": "+".join(families),
        "widths": sorted(read.pairs),
        "layer_structure": list(options.layer_structure),
        "activation_func": options.activation_func,
        "weight_initialization": options.weight_init,
        "is_layer_norm": options.add_layer_norm,
        "dropout_structure": list(options.dropout_structure),
        "activate_output": options.activate_output,
        "parameters": sum(tensor.numel() for pair in read.pairs.values() for state in pair for tensor in state.values()),
        **{key: read.info.get(key) for key in _SHOWN},
    }


def format_hypernetwork(report: dict[str, object]) -> list[str]:
    """The report's lines after the first (file, type, family)."""
    return [
        f"widths {report['widths']}, layer structure {report['layer_structure']}, activation "
        f"{report['activation_func']}, init {report['weight_initialization']}, layer norm {report['is_layer_norm']}, "
        f"dropout {report['dropout_structure']}, activate output {report['activate_output']}",
        f"{report['parameters']:,} parameters, step {report['step']}, name {report['name']}, trained on "
        f"{report['sd_checkpoint_name']} [{report['sd_checkpoint']}]",
    ]
