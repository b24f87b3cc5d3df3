"""DeepSpeed's compiled ops: built once per venv when the ``distributed`` extra is installed, found there by every run.

DeepSpeed compiles its C++ ops on first use (minutes on a small CPU) into torch's extension folder, by default one
per user, where venvs at other paths overwrite each other's builds. Runs use one folder inside the venv instead,
which ``scripts/setup_env.sh`` fills right after installing (``python -m library.training.deepspeed_ops``).

Usage: ``python -m library.training.deepspeed_ops`` builds the ops (a no-op when they are built already).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OPS = ("CPUAdamBuilder", "ShareMemCommBuilder")
"""The ops our runs load: CPU Adam (the optimizer when it is offloaded) and, on CPU machines, the shared-memory
collectives every engine sets up. The device's own builders stand behind these names (``None`` where a device has
no such op)."""


def ops_folder() -> Path:
    """This venv's folder of compiled ops."""
    return Path(sys.prefix) / "torch_extensions"


def use_venv_ops() -> None:
    """Point torch's extension folder at this venv's built ops, unless the user chose a folder, and have torch build
    with the ninja installed in the venv beside DeepSpeed whatever PATH says: ninja versions do not share a build
    log, so ops one ninja built (setup's) are built again by another (a run's, with or without the venv on PATH)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ops_folder()))
    venv_bin = Path(sys.prefix) / "bin"
    search = os.environ.get("PATH", "").split(os.pathsep)
    if (venv_bin / "ninja").is_file() and search[0] != str(venv_bin):
        os.environ["PATH"] = os.pathsep.join([str(venv_bin), *search])


def build_ops() -> list[str]:
    """Build (or find built) every op of ``OPS`` this device can run; returns their names."""
    use_venv_ops()
    from deepspeed.accelerator import get_accelerator

    built = []
    for name in OPS:
        builder = get_accelerator().create_op_builder(name)
        if builder is not None and builder.is_compatible(verbose=False):
            builder.load(verbose=False)
            built.append(builder.NAME)
    return built


def main() -> int:
    built = build_ops()
    print(f"furnace: DeepSpeed ops in {os.environ['TORCH_EXTENSIONS_DIR']}: {', '.join(built) or 'none needed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
