"""Running the real trainer CLI as a subprocess, and reading what a run wrote."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from prewarmed_python import Started, Zygote, limit_file_size

REPO = Path(__file__).resolve().parents[2]


def run_python(argv: list[str], label: str, timeout: float = 600, check: bool = True,
               env: dict[str, str] | None = None, fresh: bool = False,
               file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``python ARGV`` from the repository, offline, like a user would run it; on failure show its output.

    A script or ``-m module`` runs in a process forked from this worker's pre-warmed interpreter
    (``prewarmed_python.py``) unless ``fresh``: a test about how a fresh interpreter starts (what it imports or
    prints on import, its peak memory) asks for one; ``-c`` and ``-X`` commands always get one, and so does every
    command when ``FURNACE_TEST_FRESH_PROCESSES=1`` (to rule the pre-warmed interpreter out when a test fails).
    ``file_size_limit`` (bytes): see :func:`prewarmed_python.limit_file_size`.
    """
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if fresh or argv[0] in ("-c", "-X") or os.environ.get("FURNACE_TEST_FRESH_PROCESSES") == "1":
        result = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=environment, cwd=REPO,
            preexec_fn=None if file_size_limit is None else functools.partial(limit_file_size, file_size_limit),
        )
    else:
        result = _zygote().run(argv, environment, timeout, file_size_limit)
    if check and result.returncode != 0:
        raise AssertionError(f"{label} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def start_python(argv: list[str], stderr: Path, env: dict[str, str] | None = None) -> subprocess.Popen | Started:
    """``python ARGV`` from the repository, offline, not waited for (stdout discarded, stderr to the file): for a
    test that signals the process. Forked from the pre-warmed interpreter like :func:`run_python`'s commands."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if os.environ.get("FURNACE_TEST_FRESH_PROCESSES") == "1":
        with open(stderr, "w", encoding="utf-8") as handle:
            return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=environment, stdout=subprocess.DEVNULL,
                                    stderr=handle)
    stderr.touch()
    return _zygote().start(argv, environment, Path(os.devnull), stderr)


@functools.cache
def _zygote() -> Zygote:
    return Zygote(REPO)


def probe(args: list[str], setup_only: bool = False, fresh: bool = True) -> dict:
    """The facts ``trainer_probe.py`` reports after running the trainer with ``args``. Thread counts and compile
    state need a fresh process (the pre-warmed interpreter's torch has set up its thread pools already); the
    model's dtypes and the written files do not (``fresh=False`` skips the imports)."""
    script = str(REPO / "tests" / "training" / "trainer_probe.py")
    result = run_python([script, *(["--setup-only"] if setup_only else []), *args], "trainer_probe.py", fresh=fresh)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_cli(script: str, args: list[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts."""
    return run_python([str(REPO / script), *args], script, timeout, check)


def base_args(model: Path, dataset: Path, output: Path, **overrides: object) -> list[str]:
    """A small, fast LoRA run on a tiny model at 64 px."""
    settings = {
        "pretrained_model_name_or_path": model,
        "train_data_dir": dataset,
        "output_dir": output,
        "output_name": "lora",
        "resolution": 64,
        "train_batch_size": 2,
        "network_dim": 4,
        "network_alpha": 2,
        "learning_rate": 1e-3,
        "max_train_steps": 8,
        "seed": 1,
        "save_precision": "float",
    }
    settings.update(overrides)
    args: list[str] = []
    for key, value in settings.items():
        args += [f"--{key}", str(value)]
    return args


def read_events(output: Path) -> list[dict]:
    path = output / "progress.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
