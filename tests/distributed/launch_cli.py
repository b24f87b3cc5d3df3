"""Launching a script in N CPU processes the way a user would (``accelerate launch --multi_gpu``), gloo backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(script: Path, args: list[str], processes: int = 2, mode: tuple[str, ...] = ("--multi_gpu",),
                      timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N`` on CPU (``--cpu`` would silently run one process);
    ``mode`` replaces ``--multi_gpu``, e.g. by ``--use_deepspeed --zero_stage 2``."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(processes),
        "--num_machines", "1", "--num_cpu_threads_per_process", "1", "--main_process_port", str(free_port()),
        "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"launch exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
                             f"stderr:\n{result.stderr[-8000:]}")
    return result
