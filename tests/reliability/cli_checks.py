"""Running the real trainer CLI against hostile folders, and the checks every refusal must pass: exit code 1, one
`error:` line naming the file or key, no traceback, and the earlier output as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from trainer_cli import run_python

from library.atomic_files import is_temporary
from library.data.synthetic import write_dataset
from library.folder_lock import LOCK_FILE

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
# A start rewrites config.toml and the lock's holder record and adds to progress.jsonl and logs/; every other file
# of a run is earlier output.
RESTARTED = ("config.toml", "progress.jsonl", "logs", LOCK_FILE)
FINISHED_STEPS = 4


def train_args(model: Path, dataset: Path, output: Path, **overrides: object) -> list[str]:
    """A small, fast LoRA run on a tiny model at 64 px that keeps its resume state."""
    settings = {
        "pretrained_model_name_or_path": model, "train_data_dir": dataset, "output_dir": output,
        "output_name": "lora", "resolution": 64, "train_batch_size": 2, "network_dim": 4, "network_alpha": 2,
        "learning_rate": 1e-3, "max_train_steps": FINISHED_STEPS, "seed": 1, "save_precision": "float",
        "output.save_state": "true",
    }
    settings.update(overrides)
    return [item for key, value in settings.items() for item in (f"--{key}", str(value))]


def finished_run(model: Path, root: Path) -> Path:
    """Train ``root/run`` for FINISHED_STEPS steps on a generated dataset, keeping its resume state."""
    write_dataset(root / "dataset", count=12, repeats=5, seed=3)
    assert_trained(train(train_args(model, root / "dataset", root / "run")))
    return root / "run"


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


def resume_args(run: Path, *extra: str, steps: int = FINISHED_STEPS + 2) -> list[str]:
    """Continue ``run`` (from its own config) to ``steps`` steps from its saved state."""
    return ["--config", str(run / "config.toml"), "--output_dir", str(run), "--max_train_steps", str(steps),
            "--resume", "latest", *extra]


def train(args: list[str], file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``python train_network.py ARGS`` from the repository, as a user runs it (a process forked from the pre-warmed
    interpreter); ``file_size_limit`` as in ``trainer_cli.run_python``."""
    return run_python([str(REPO / "train_network.py"), *args], "train_network.py", check=False,
                      env={"OMP_NUM_THREADS": "1"}, file_size_limit=file_size_limit)


def assert_trained(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"trainer exited {result.returncode}:\n{result.stderr[-3000:]}"


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """Exit code 1, exactly one ``error:`` line mentioning every one of ``names``, no traceback; returns the line."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, f"exit {result.returncode}, {errors}\n{result.stderr[-3000:]}"
    for name in names:
        assert name in errors[0], f"{name!r} not in {errors[0]!r}"
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every earlier-output file under ``folder`` (hidden ones included), by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).parts[0] not in RESTARTED
    }


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "progress.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_unchanged(folder: Path, before: dict[str, str], events_before: list[dict]) -> None:
    """Every earlier-output file is byte for byte as it was (new ones may have joined them), no temporary is left,
    and progress.jsonl still begins with its earlier events."""
    after = snapshot(folder)
    assert {name: after.get(name) for name in before} == before
    assert not [path for path in folder.rglob("*") if is_temporary(path)]
    assert events(folder)[: len(events_before)] == events_before
