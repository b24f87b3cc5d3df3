"""How much memory a run may still take on its device, and how much the process already holds.

On a GPU it is the device's free memory (``torch.cuda.mem_get_info``). On the CPU it is ``MemAvailable`` plus
``SwapFree`` from ``/proc/meminfo``: a run that only fits with swap is slow, but it runs, and the check refuses
only runs that cannot; a cgroup memory limit (containers) caps that figure. Where neither can be read, the figure
is unknown and nothing is refused.

``FURNACE_MEMORY_AVAILABLE_BYTES`` replaces the measured figure (tests use it to stand in for a smaller machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

MEMORY_ENV = "FURNACE_MEMORY_AVAILABLE_BYTES"
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Available:
    """Bytes a run may still allocate, and where the figure comes from (for messages)."""

    bytes: int
    source: str


def available_memory(device: torch.device) -> Available | None:
    """What the run may still take on ``device``; None when the machine does not say."""
    if os.environ.get(MEMORY_ENV):
        return Available(int(os.environ[MEMORY_ENV]), f"${MEMORY_ENV}")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return Available(free, f"free on {device}")
    return _system_memory()


def _system_memory() -> Available | None:
    fields = _meminfo()
    if "MemAvailable" not in fields:
        return None
    available = Available(fields["MemAvailable"] + fields.get("SwapFree", 0), "RAM and swap")
    limit = _cgroup_room()
    return Available(limit, "the cgroup memory limit") if limit is not None and limit < available.bytes else available


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes, by field name; empty where there is no such file."""
    try:
        lines = _MEMINFO.read_text(encoding="ascii").splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return fields


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit; None without a limit."""
    try:
        limit = (_CGROUP / "memory.max").read_text(encoding="ascii").strip()
        current = int((_CGROUP / "memory.current").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - current)


def resident_bytes() -> int | None:
    """This process's resident memory now (``VmRSS``), None where the system does not report it."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None
