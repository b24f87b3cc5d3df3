"""Launching a script in N CPU processes the way a user would (``accelerate launch --multi_gpu``), gloo backend,
on one machine or as several machines meeting over loopback."""

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


def _launch_command(script: Path, args: list[str], processes: int, mode: tuple[str, ...], port: int,
                    machines: tuple[str, ...] = ("--num_machines", "1")) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(processes), *machines,
        "--num_cpu_threads_per_process", "1", "--main_process_port", str(port), "--mixed_precision", "no",
        "--dynamo_backend", "no", str(script), *args,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _check(result: subprocess.CompletedProcess, what: str = "launch") -> None:
    if result.returncode != 0:
        raise AssertionError(f"{what} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
                             f"stderr:\n{result.stderr[-8000:]}")


def accelerate_launch(script: Path, args: list[str], processes: int = 2, mode: tuple[str, ...] = ("--multi_gpu",),
                      timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N`` on CPU (``--cpu`` would silently run one process);
    ``mode`` replaces ``--multi_gpu``, e.g. by ``--use_deepspeed --zero_stage 2``."""
    command = _launch_command(script, args, processes, mode, free_port())
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO)
    if check:
        _check(result)
    return result


def accelerate_launch_machines(script: Path, args: list[str], machines: int = 2,
                               timeout: float = 900) -> list[subprocess.CompletedProcess]:
    """One ``accelerate launch --num_machines N --machine_rank R`` per machine, as on N hosts, one process each,
    all meeting at machine 0's address (loopback here); fails with the output of the first machine that failed."""
    port = free_port()
    launchers = [
        subprocess.Popen(
            _launch_command(script, args, machines, ("--multi_gpu",), port,
                            ("--num_machines", str(machines), "--machine_rank", str(rank),
                             "--main_process_ip", "127.0.0.1", "--same_network")),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
        for rank in range(machines)
    ]
    results = []
    for launcher in launchers:
        try:
            stdout, stderr = launcher.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in launchers:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr))
    for rank, result in enumerate(results):
        _check(result, f"machine {rank}'s launch")
    return results
